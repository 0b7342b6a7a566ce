"""`python -m trainer_core`: errors the user can fix are one `error:` line and exit status 2; bugs keep tracebacks."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from safetensors import SafetensorError

from tests.engine_support import write_cache
from trainer_core.cli import main
from trainer_core.commands import dataset as dataset_command
from trainer_core.lorafile.write import save_lora_file

REPO = Path(__file__).resolve().parents[2]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _train_yaml(tmp_path: Path, data: Path, checkpoint: Path) -> Path:
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": str(data),
        "model": {"checkpoint": str(checkpoint), "device": "cpu", "dtype": "float32"},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_with_a_folder_that_is_no_cache(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", str(_train_yaml(tmp_path, tmp_path / "empty", tmp_path / "none.safetensors"))]) == 2
    assert "is not a latent cache (no manifest.json)" in _error_line(capsys)


def test_train_with_a_missing_checkpoint_or_resume_file(tmp_path, capsys):
    cache = write_cache(tmp_path / "cache", [24.0])
    config = _train_yaml(tmp_path, cache, tmp_path / "none.safetensors")
    assert main(["train", str(config), "--resume", str(tmp_path / "gone.safetensors")]) == 2
    assert "--resume" in _error_line(capsys)
    assert main(["train", str(config)]) == 2
    line = _error_line(capsys)
    assert "checkpoint not found" in line and "none.safetensors" in line


def test_lora_convert_on_a_full_disk(tmp_path, capsys, monkeypatch):
    src = save_lora_file(tmp_path / "in.safetensors", {"diffusion_model.a.lora_A.weight": torch.zeros(2, 4),
                                                       "diffusion_model.a.lora_B.weight": torch.zeros(4, 2)}, {})

    def full(tensors, filename, metadata=None):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert main(["lora", "convert", str(src), str(tmp_path / "out.safetensors"), "--to", "peft"]) == 2
    line = _error_line(capsys)
    assert "No space left on the disk while writing" in line and "out.safetensors" in line and "free space" in line


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/x.bin"), "No space left on the disk while"),
        (FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/data/in.yaml"), "/data/in.yaml"),
        (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/out"), "permission denied"),
    ],
)
def test_os_errors_on_a_named_file_are_one_line(capsys, monkeypatch, raised, expected):
    def run(args):
        raise raised

    monkeypatch.setattr(dataset_command, "run", run)
    assert main(["dataset", "anything"]) == 2
    assert expected in _error_line(capsys)


def test_bugs_keep_their_traceback(monkeypatch):
    def run(args):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(dataset_command, "run", run)
    with pytest.raises(ValueError, match="internal inconsistency"):
        main(["dataset", "anything"])


def test_the_real_entry_point_prints_no_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    config = _train_yaml(tmp_path, tmp_path / "empty", tmp_path / "none.safetensors")
    out = subprocess.run(
        [sys.executable, "-m", "trainer_core", "train", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr, out.stderr


def _no_traceback(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_sweep_error_reaching_main_is_one_line(capsys, monkeypatch):
    from trainer_core.sweep.plan import parse_seeds

    monkeypatch.setattr(dataset_command, "run", lambda args: parse_seeds("3, -1"))
    assert main(["dataset", "anything"]) == 2
    assert "seeds: [3, -1] holds a negative seed" in _no_traceback(capsys)


def test_a_media_error_reaching_main_is_one_line(tmp_path, capsys, monkeypatch):
    from trainer_core.dataset.media import probe

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(bytes(range(256)) * 4)  # a corrupt clip (binary: plain text is named as such): `dataset` lists it as excluded, so probe it directly
    monkeypatch.setattr(dataset_command, "run", lambda args: probe(clip))
    assert main(["dataset", "anything"]) == 2
    assert "clip.mp4 cannot be opened as a video" in _no_traceback(capsys)


def test_lora_inspect_on_a_non_lora_file_is_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    out = subprocess.run(
        [sys.executable, "-m", "trainer_core", "lora", "inspect", str(text)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr, out.stderr
    assert "is not a safetensors file" in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.parametrize("layout", ["comfy scaled_fp8", "lightricks fp8"])
def test_train_refuses_a_scaled_fp8_checkpoint_plainly_and_cache_still_takes_it(tmp_path, capsys, layout):
    """The headless trainer loads bf16/fp32 weights: a scaled-fp8 file is refused saying so and what to use instead,
    not as a damaged file with unexpected keys. Caching reads only its (unquantized) VAE, so it still takes the file."""
    from tests.comfy_models import write_downloaded_layout, write_scaled_fp8
    from trainer_core.ltxcore.backbone import LtxCoreBackbone
    from trainer_core.ltxcore.checkpoint_file import check_base_checkpoint
    from trainer_core.ltxcore.model import CheckpointKeyError
    from trainer_core.ltxcore.tiny import write_tiny_checkpoint

    tiny = write_tiny_checkpoint(tmp_path / "tiny.safetensors", seed=0)
    fp8 = tmp_path / "tiny_fp8.safetensors"
    if layout == "comfy scaled_fp8":
        write_scaled_fp8(tiny, fp8)
        assert check_base_checkpoint(fp8, "--checkpoint", needs_vae=True) == "ltx-2.3"  # what `cache` checks
    else:
        write_downloaded_layout(fp8, "fp8")
    config = _train_yaml(tmp_path, write_cache(tmp_path / "cache", [24.0]), fp8)
    assert main(["train", str(config)]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: model.checkpoint {fp8} is in ComfyUI's scaled-fp8 layout"), line
    assert "read bf16 or fp32 single-file checkpoints only" in line and "Train LTX LoRA node" in line
    assert "does not match the architecture" not in line
    with pytest.raises(CheckpointKeyError, match="scaled-fp8 layout"):  # headless sweep loads it this way
        LtxCoreBackbone.from_checkpoint(fp8)
