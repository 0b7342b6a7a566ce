"""Resume survives damage: checksummed checkpoints, fallback to the newest intact one, no stale temp files."""

from __future__ import annotations

import json
import logging

import pytest
import safetensors.torch
from safetensors import SafetensorError

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.atomic import DiskWriteError
from trainer_core.engine.checkpoints import list_checkpoints, resolve_resume
from trainer_core.engine.state import CheckpointDamaged, state_paths
from trainer_core.engine.trainer import Trainer
from trainer_core.errors import UserError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny") / "tiny_ltx23.safetensors"


@pytest.fixture()
def run(ckpt, tmp_path):
    """A finished 6-step run with checkpoints at steps 2, 4 and 6; returns (run folder, losses)."""
    cfg = config(tmp_path, checkpoints={"every": 2, "keep_last": 0})
    result = Trainer(tiny_backbone(ckpt), synthetic_data(), cfg).train()
    return tmp_path / "run", result.losses


def _files(run_dir, step):
    lora = run_dir / f"t_step_{step:05d}.safetensors"
    tensors, json_path = state_paths(lora)
    return {"lora": lora, "state": tensors, "json": json_path}


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the tensor data: the file still parses, only the checksum catches it
    path.write_bytes(bytes(data))


def _edit_json(path):
    meta = json.loads(path.read_text())
    meta["step"] = 5
    path.write_text(json.dumps(meta))


DAMAGE = {
    "truncated optimizer state": ("state", _truncate),
    "corrupt LoRA (same size)": ("lora", _flip_byte),
    "corrupt optimizer state (same size)": ("state", _flip_byte),
    "edited state JSON": ("json", _edit_json),
    "truncated state JSON": ("json", _truncate),
    "missing state JSON (save interrupted)": ("json", lambda p: p.unlink()),
    "missing optimizer state": ("state", lambda p: p.unlink()),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_latest_is_reported_and_the_newest_intact_checkpoint_resumes(run, ckpt, tmp_path, caplog, damage):
    run_dir, losses = run
    part, spoil = DAMAGE[damage]
    spoil(_files(run_dir, 6)[part])
    with caplog.at_level(logging.WARNING):
        chosen = resolve_resume("latest", run_dir, "t")
    assert chosen == _files(run_dir, 4)["lora"]
    assert "t_step_00006.safetensors is damaged" in caplog.text and "resuming from t_step_00004" in caplog.text
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path, checkpoints={"every": 2}))
    trainer.resume(chosen)
    assert trainer.run.step == 4 and trainer.run.losses == losses[:4]
    assert trainer.train().losses == losses  # the run continues as the uninterrupted one did


def test_no_intact_checkpoint_refuses_naming_each_and_what_is_wrong(run):
    run_dir, _ = run
    for step in (2, 4, 6):
        _truncate(_files(run_dir, step)["state"])
    with pytest.raises(CheckpointDamaged) as info:
        resolve_resume("latest", run_dir, "t", label="--resume")
    message = str(info.value)
    assert isinstance(info.value, UserError) and message.startswith("--resume: no intact checkpoint")
    for step in (2, 4, 6):
        assert f"t_step_{step:05d}.state.tensors is " in message
    assert "truncated" in message and "Start a new run" in message


def test_an_explicitly_named_damaged_checkpoint_is_refused(run, ckpt, tmp_path):
    run_dir, _ = run
    _flip_byte(_files(run_dir, 4)["lora"])
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path))
    with pytest.raises(CheckpointDamaged, match=r"cannot resume from .*t_step_00004\.safetensors: "
                                                r"t_step_00004\.safetensors does not match its checksum"):
        trainer.resume(_files(run_dir, 4)["lora"])
    assert trainer.run.step == 0


def test_a_run_folder_given_by_name_also_falls_back(run, tmp_path):
    run_dir, _ = run
    _files(run_dir, 6)["json"].unlink()
    assert resolve_resume("run", tmp_path / "other", "t") == _files(run_dir, 4)["lora"]


def test_stale_temp_files_of_this_run_are_swept_at_the_start_with_a_log_line(ckpt, tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ours = run_dir / f".t_step_00003.state.tensors.{'a' * 32}.tmp"
    other_run = run_dir / f".u_step_00003.safetensors.{'b' * 32}.tmp"
    not_ours = run_dir / ".t_step_notes.tmp"
    for path in (ours, other_run, not_ours):
        path.write_bytes(b"partial")
    with caplog.at_level(logging.INFO):
        Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path, optimization={"steps": 1})).train()
    assert not ours.exists() and other_run.exists() and not_ours.exists()
    assert f"removed {ours}, left by a save that was interrupted" in caplog.text
    assert [s for s, _ in list_checkpoints(run_dir, "t")] == [1]


def test_a_full_disk_during_a_save_leaves_the_previous_checkpoint_intact_and_resumable(ckpt, tmp_path, monkeypatch):
    real = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        if "t_step_00004" in str(filename):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    cfg = config(tmp_path, checkpoints={"every": 2})
    with pytest.raises(DiskWriteError, match="No space left on the disk while writing"):
        Trainer(tiny_backbone(ckpt), synthetic_data(), cfg).train()
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.iterdir() if "step" in p.name) == sorted(
        p.name for p in _files(run_dir, 2).values())
    assert resolve_resume("latest", run_dir, "t") == _files(run_dir, 2)["lora"]  # all its checksums match
