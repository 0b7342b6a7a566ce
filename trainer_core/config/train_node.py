"""Settings that only the Train and Plot Loss nodes have, beside the run's ``TrainConfig``.

``TrainNodeFiles`` names files the Train node reads (a YAML with all settings, a checkpoint to resume); the CLI
takes the same as its ``CONFIG.yaml`` argument and ``--resume``. ``LossPlotSettings`` is the loss chart.
"""

from __future__ import annotations

from .base import Section, knob


class TrainNodeFiles(Section):
    """Optional files the Train node starts from."""

    config_yaml: str = knob(
        "",
        "Optional YAML file with all settings (config.yaml of an earlier run, a CLI config, or an ltx-trainer / "
        "LTX-2 LoRA tutorial config, translated); overrides the settings sockets and widgets. A name in ComfyUI's "
        "input folder, or a path inside the input, user, output or loras folders. With training_data and latent "
        "unconnected, the run trains on the file's data: folder.",
        ui={"optional": True},
    )
    resume_from: str = knob(
        "",
        "Optional checkpoint to continue from: 'latest' (this run's newest), a checkpoint file (relative to this "
        "run's folder, or a path inside the loras folder), or the name of another run (its newest checkpoint). "
        "Step numbering, optimizer and RNG state continue.",
        ui={"optional": True},
    )


class LossPlotSettings(Section):
    """The loss chart."""

    smoothing: float = knob(0.9, "EMA smoothing.", ge=0.0, le=0.999, ui={"step": 0.01})
