"""save_lora_file / read_lora_file: round trip, atomicity, and clear errors for unusable files."""

from __future__ import annotations

import errno
import json
import struct

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from trainer_core.atomic import DiskWriteError
from trainer_core.lorafile import LoraFileError, comfy_keys, lora_metadata, read_lora_file, save_lora_file
from trainer_core.lorafile import metadata as md


def _lora(rank: int = 4) -> dict[str, torch.Tensor]:
    a, b, alpha = comfy_keys("transformer_blocks.0.attn1.to_q")
    g = torch.Generator().manual_seed(0)
    return {a: torch.randn(rank, 32, generator=g), b: torch.randn(48, rank, generator=g), alpha: torch.tensor(8.0)}


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    meta = lora_metadata(rank=4, alpha=8.0, targets=["to_q"], step=100, trigger="ohwx", training_config={"lr": 1e-4})
    tensors = _lora()
    out = save_lora_file(tmp_path / "sub" / "x.safetensors", tensors, meta)
    assert out == tmp_path / "sub" / "x.safetensors"
    loaded, meta2 = read_lora_file(out)
    assert meta2 == meta
    assert meta2[md.FORMAT] == "comfyui" and meta2[md.BASE_MODEL] == "ltx-2.3"
    assert json.loads(meta2[md.TARGETS]) == ["to_q"] and json.loads(meta2[md.TRAINING_CONFIG]) == {"lr": 1e-4}
    assert loaded.keys() == tensors.keys()
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v)
    assert loaded[comfy_keys("transformer_blocks.0.attn1.to_q")[2]].dim() == 0
    assert [p.name for p in out.parent.iterdir()] == ["x.safetensors"]  # no temp file left


def test_non_contiguous_and_shared_tensors_are_saved(tmp_path):
    base = torch.randn(8, 4)
    a, b, _ = comfy_keys("m")
    out = save_lora_file(tmp_path / "v.safetensors", {a: base.t(), b: base}, {})
    loaded, _ = read_lora_file(out)
    assert torch.equal(loaded[a], base.t()) and torch.equal(loaded[b], base)


def test_metadata_must_be_strings(tmp_path):
    with pytest.raises(TypeError, match=r"ltxlora\.rank"):
        save_lora_file(tmp_path / "x.safetensors", _lora(), {md.RANK: 4})


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.safetensors"
    save_lora_file(target, _lora(), {"v": "old"})

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:  # noqa: PTH123 - mimic a partial write by the library
            fh.write(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(DiskWriteError, match=r"No space left.*x\.safetensors") as info:
        save_lora_file(target, _lora(), {"v": "new"})
    assert info.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
    assert read_lora_file(target)[1] == {"v": "old"}


def test_unwritable_folder_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DiskWriteError, match=r"file/x\.safetensors"):
        save_lora_file(blocker / "x.safetensors", _lora(), {})


def test_missing_file(tmp_path):
    with pytest.raises(LoraFileError, match=r"not found.*nope\.safetensors"):
        read_lora_file(tmp_path / "nope.safetensors")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "too short"),
        (b"PK\x03\x04 this is a zip/pt file" * 10, "not a safetensors file"),
        (struct.pack("<Q", 20) + b"{not json at all!!!}", "corrupt safetensors header"),
    ],
)
def test_not_safetensors(tmp_path, payload, message):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(payload)
    with pytest.raises(LoraFileError, match=message):
        read_lora_file(p)


def test_truncated_file(tmp_path):
    p = tmp_path / "t.safetensors"
    save_lora_file(p, _lora(), {})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 64])
    with pytest.raises(LoraFileError, match="corrupt or truncated"):
        read_lora_file(p)


def test_checkpoint_is_not_a_lora(tmp_path):
    p = tmp_path / "ckpt.safetensors"
    save_file({"model.diffusion_model.transformer_blocks.0.attn1.to_q.weight": torch.zeros(4, 4)}, str(p))
    with pytest.raises(LoraFileError, match=r"holds no LoRA weights.*checkpoint"):
        read_lora_file(p)


def test_metadata_rejects_unknown_family():
    with pytest.raises(ValueError, match="ltx-3"):
        lora_metadata(rank=1, alpha=1, targets=[], step=0, base_model="ltx-3")


def test_written_files_get_the_umask_mode_or_keep_the_replaced_files_mode(tmp_path):
    import os

    from trainer_core.atomic import save_png, write_atomic

    previous = os.umask(0o022)
    try:
        lora = save_lora_file(tmp_path / "x.safetensors", _lora(), {})
        text = write_atomic(tmp_path / "config.yaml", "a: 1\n")
        from PIL import Image

        png = save_png(Image.new("RGB", (4, 4)), tmp_path / "loss.png")
    finally:
        os.umask(previous)
    for path in (lora, text, png):  # readable by ComfyUI running as another user, as open() would make it
        assert path.stat().st_mode & 0o777 == 0o644, path
    assert Image.open(png).format == "PNG"
    text.chmod(0o640)
    write_atomic(text, "a: 2\n")
    assert text.stat().st_mode & 0o777 == 0o640 and text.read_text() == "a: 2\n"
