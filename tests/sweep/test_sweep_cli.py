"""The headless `sweep` command: a run folder or LoRA files x strengths x prompts x seeds, sampled with the pack's
sampler on the ltx-core backbone, decoded by the tiny checkpoint's VAE into a grid video and a still grid."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
import torch
import yaml
from PIL import Image

from tests.cli.test_cli_headless_previews import frame_count, standin_cache  # noqa: F401 - the fixture
from trainer_core.cli import main
from trainer_core.sweep.grid import GridLayout, grid_image

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) is the headless backbone")


@pytest.fixture(scope="module")
def trained_run(standin_cache, tmp_path_factory) -> Path:  # noqa: F811 - the imported fixture
    ckpt, cache = standin_cache
    root = tmp_path_factory.mktemp("sweep")
    cfg = {
        "name": "sw", "seed": 0, "output_dir": str(root / "run"), "data": str(cache),
        "model": {"checkpoint": str(ckpt), "device": "cpu", "dtype": "float32"},
        "lora": {"rank": 4, "alpha": 4}, "optimization": {"steps": 4, "learning_rate": 5e-2},
        "checkpoints": {"every": 2}, "memory": {"mixed_precision": "no", "gradient_checkpointing": False},
        "preview": {"width": 64, "height": 64, "frames": 9, "steps": 2},
    }  # fmt: skip
    (root / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(root / "train.yaml")]) == 0
    return root / "run"


def video_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.width, stream.height


def test_sweep_of_a_run_folder_writes_the_grid_of_every_cell(trained_run, capsys):
    assert main(["sweep", str(trained_run), "--strengths", "0, 1", "--seeds", "1, 2", "--trigger", "sks",
                 "--prompts", "sks a grey clip number 0\na red ball"]) == 0
    out = capsys.readouterr().out
    # base + 2 checkpoints at strength 1 = 3 rows; 2 prompts x 2 seeds = 4 columns
    assert "12 cells = 3 rows x 2 prompts x 2 seeds" in out
    assert "rows: base, sw_step_00002 @ 1, sw_step_00004 @ 1" in out
    assert "[trigger] sks a grey clip number 0; [other] a red ball" in out
    video, still = trained_run / "sweep.mp4", trained_run / "sweep.png"
    assert frame_count(video) == 9  # the run's preview.frames, decoded by the checkpoint's VAE
    # The still is the 3 x 4 grid of 64 x 64 tiles (first, middle, last frame each): what grid_image lays out.
    rows = ["base", "sw_step_00002 @ 1", "sw_step_00004 @ 1"]
    columns = [f"{k}: {p} | seed {s}" for k, p in (("trigger", "sks a grey clip number 0"), ("other", "a red ball"))
               for s in (1, 2)]
    expected = grid_image([torch.zeros(9, 64, 64, 3)] * 12, GridLayout(4, (), ["x"] * 12, rows, columns))
    assert Image.open(still).size == expected.size
    assert "row                effect  bleed   score" in out and "ranking (mean score over strengths):" in out
    assert video_size(video)[0] > 4 * 64 and video_size(video)[1] > 3 * 64


def test_sweep_of_lora_files_needs_a_checkpoint_and_renders_without_base(trained_run, standin_cache, tmp_path,
                                                                         capsys):  # noqa: F811
    ckpt, cache = standin_cache
    lora = trained_run / "sw_step_00004.safetensors"
    assert main(["sweep", str(lora), "--out", str(tmp_path / "g.mp4")]) == 2
    assert "--checkpoint is required with LoRA files" in capsys.readouterr().err
    assert main(["sweep", str(lora), "--checkpoint", str(ckpt), "--data", str(cache), "--out", str(tmp_path / "g.mp4"),
                 "--strengths", "0.5", "--seeds", "3", "--width", "64", "--height", "64", "--frames", "1",
                 "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 cells = 1 rows x 1 prompts x 1 seeds" in out and "no strength 0 (base) row: no numbers" in out
    assert frame_count(tmp_path / "g.mp4") == 1 and (tmp_path / "g.png").is_file()


def test_lora_strength_changes_the_rendered_clip(trained_run, standin_cache, tmp_path):  # noqa: F811
    """Strength 0 is the base model and the LoRA at strength 1 renders something else: the hooks are applied."""
    from trainer_core.cache.reader import CachedData
    from trainer_core.config.training import PreviewSettings
    from trainer_core.ltxcore.backbone import LtxCoreBackbone
    from trainer_core.ltxcore.encoders import LtxCoreVae
    from trainer_core.ltxcore.previews import lora_applied, render, training_captions

    ckpt, cache = standin_cache
    backbone = LtxCoreBackbone.from_checkpoint(ckpt, dtype=torch.float32, device="cpu")
    decoder = LtxCoreVae(ckpt)
    prompt = training_captions(CachedData(cache), 1)[0]
    size = PreviewSettings(width=64, height=64, frames=1, steps=2)
    base = render(backbone, decoder, prompt, size, 0, 24.0)
    with lora_applied(backbone, trained_run / "sw_step_00004.safetensors", 0.0):
        torch.testing.assert_close(render(backbone, decoder, prompt, size, 0, 24.0), base)
    with lora_applied(backbone, trained_run / "sw_step_00004.safetensors", 1.0):
        assert (render(backbone, decoder, prompt, size, 0, 24.0) - base).abs().max() > 1e-4
    torch.testing.assert_close(render(backbone, decoder, prompt, size, 0, 24.0), base)  # hooks removed
