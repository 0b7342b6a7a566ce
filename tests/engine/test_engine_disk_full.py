"""A full disk (or quota) while writing a checkpoint: one clear error, no partial checkpoint, no temp files."""

from __future__ import annotations

import errno
import os
import pathlib

import pytest
import safetensors.torch
from safetensors import SafetensorError

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.atomic import DiskWriteError, write_atomic
from trainer_core.engine.trainer import Trainer

FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny") / "tiny_ltx23.safetensors"


def _failing_save_file(real, calls: list[str], marker: str):
    """safetensors' ``save_file`` that writes part of the file, then fails as on a full disk, for names with marker."""

    def save_file(tensors, filename, metadata=None):
        if marker not in str(filename):
            return real(tensors, filename, metadata=metadata)
        calls.append(str(filename))
        pathlib.Path(filename).write_bytes(b"partial")
        raise SafetensorError(FULL)

    return save_file


def _leftovers(run: pathlib.Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if "step_00003" in p.name or p.name.endswith(".tmp"))


def test_full_disk_in_the_state_tensors_names_the_file_and_output_dir(ckpt, tmp_path, monkeypatch):
    calls: list[str] = []
    failing = _failing_save_file(safetensors.torch.save_file, calls, ".state")
    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path))
    with pytest.raises(DiskWriteError) as info:
        trainer.train()
    message = info.value.strerror
    assert info.value.errno == errno.ENOSPC
    assert "No space left on the disk while writing" in message and "t_step_00003.state.tensors" in message
    assert "free space" in message and f"output_dir: {tmp_path / 'run'}" in message
    assert _leftovers(tmp_path / "run") == []
    assert len(calls) == 1  # no second attempt at a checkpoint on the way out: it would fail the same way


def test_quota_exceeded_in_the_state_json_removes_the_whole_checkpoint(ckpt, tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if ".state.json" in str(pathlib.Path(f"/proc/self/fd/{fd}").readlink()):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path))
    with pytest.raises(DiskWriteError, match=r"Disk quota exceeded while writing .*t_step_00003\.state\.json"):
        trainer.train()
    assert _leftovers(tmp_path / "run") == []  # the state tensors written just before are gone too


def test_full_disk_in_the_lora_file_removes_its_state_files(ckpt, tmp_path, monkeypatch):
    calls: list[str] = []
    failing = _failing_save_file(safetensors.torch.save_file, calls, "t_step_00003.safetensors")  # not .state
    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path))
    with pytest.raises(DiskWriteError, match=r"No space left.*t_step_00003\.safetensors.*output_dir"):
        trainer.train()
    assert _leftovers(tmp_path / "run") == []


def test_a_folder_that_cannot_be_created_on_a_full_disk_is_named(tmp_path, monkeypatch):
    def mkdir(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    with pytest.raises(DiskWriteError, match=r"No space left on the disk while writing .*new/x\.json; free space"):
        write_atomic(tmp_path / "new" / "x.json", "{}")
