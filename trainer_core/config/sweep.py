"""Settings of the *LTX LoRA Sweep* and *LTX Sweep Grid* nodes (their widgets come from these models).

The sockets (MODEL, conditionings, CLIP, images, the plan) stay on the nodes; these are the typed-in values.
"""

from __future__ import annotations

from .base import Section, knob

DEFAULT_STRENGTHS = "0, 0.5, 0.75, 1.0"


class SweepSettings(Section):
    """What a strength sweep covers: LoRA files or checkpoint folders, strengths, seeds and extra prompts."""

    loras: str = knob(
        "",
        "Comma-separated LoRA files and/or checkpoint folders (every <name>_step_NNNNN.safetensors in step "
        "order): names in models/loras (the node reads nowhere else; an absolute path must lie inside it), or any "
        "path in the CLI.",
    )
    strengths: str = knob(DEFAULT_STRENGTHS, "Comma-separated strengths; 0 = the base model.")
    seeds: str = knob("42", "Comma-separated seeds (3 seeds test consistency).")
    max_cells: int = knob(48, "Refuse sweeps with more cells than this.", ge=1, le=4096)
    prompts: str = knob(
        "",
        "One prompt per line (needs clip). Lines containing the trigger word are trigger prompts; the others "
        "measure bleed.",
        ui={"optional": True, "multiline": True},
    )
    trigger: str = knob("", "Trigger word that marks trigger prompt lines.", ui={"optional": True})


class SweepGridSettings(Section):
    """How the sweep's decoded results are laid out and saved."""

    columns: int = knob(0, "Without sweep: columns (0 = square).", ge=0, le=256)
    fps: float = knob(24.0, "Frame rate of the grid video.", ge=1.0, le=120.0, ui={"step": None})
    tile_height: int = knob(160, "Height of each frame tile.", ge=32, le=1024)
    filename_prefix: str = knob("ltx_sweep/grid", "Grid video name in output/.")
