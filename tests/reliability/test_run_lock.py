"""One run per run folder: a second run is refused naming the live one, a dead run's lock is taken over, and the
lock is gone after a finished, a cancelled and a failed run."""

from __future__ import annotations

import importlib
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.cli import main
from trainer_core.engine.run_lock import LOCK_NAME, RunLockedError
from trainer_core.engine.trainer import Callbacks, Trainer

REPO = Path(__file__).resolve().parents[2]
_HOLD = (
    "import sys\nfrom pathlib import Path\nfrom trainer_core.engine.run_lock import RunLock\n"
    "with RunLock(Path(sys.argv[1]), 'other_run'):\n    print('held', flush=True)\n    sys.stdin.read()\n"
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny") / "tiny_ltx23.safetensors"


@pytest.fixture
def held(tmp_path):
    """Another process holding the lock of tmp_path/run until the test ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / "run")], cwd=REPO, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _assert_names_the_holder(message: str, proc: subprocess.Popen) -> None:
    assert f"pid {proc.pid} on host {socket.gethostname()}" in message and "started 20" in message
    assert "'other_run'" in message and "in use by another training run" in message


def test_a_second_run_into_a_held_folder_is_refused(ckpt, tmp_path, held):
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path))
    with pytest.raises(RunLockedError) as err:
        trainer.train()
    _assert_names_the_holder(str(err.value), held)
    assert trainer.run.step == 0 and not list((tmp_path / "run").glob("*.safetensors"))
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing of the live run's was overwritten
    held.stdin.close()
    held.wait(timeout=30)
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # the holder released it on exit
    assert trainer.train().status == "completed"


def test_cli_train_is_refused_before_the_model_loads(tmp_path, held, capsys):
    cfg = {"output_dir": str(tmp_path / "run"), "data": str(tmp_path / "no_cache"),
           "model": {"checkpoint": str(tmp_path / "none.safetensors"), "device": "cpu"}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "train.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    _assert_names_the_holder(err, held)


def test_a_dead_runs_lock_is_taken_over(ckpt, tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01 00:00:00", "name": "crashed"}
    (run / LOCK_NAME).write_text(json.dumps(stale))
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path))
    seen = []
    with caplog.at_level(logging.WARNING, logger="trainer_core.engine.run_lock"):
        result = trainer.train(Callbacks(on_step=lambda info: seen.append(json.loads((run / LOCK_NAME).read_text()))))
    assert result.status == "completed"
    assert f"taking over the run lock {run / LOCK_NAME}" in caplog.text and f"pid {dead.pid}" in caplog.text
    assert {s["name"] for s in seen} == {"t"}  # held by this run while it trained
    assert not (run / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_not_taken_over(ckpt, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "x", "name": "far"}))
    with pytest.raises(RunLockedError, match=r"pid 1 on host elsewhere\.example.*delete .*" + LOCK_NAME):
        Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path)).train()


@pytest.mark.parametrize("ending", ["completed", "cancelled", "interrupted"])
def test_the_lock_is_released_however_the_run_ends(ckpt, tmp_path, ending):
    trainer = Trainer(tiny_backbone(ckpt), synthetic_data(), config(tmp_path))
    lock = tmp_path / "run" / LOCK_NAME
    held = []

    def on_step(info) -> None:
        held.append(lock.exists())
        if ending == "interrupted" and info.step == 2:
            raise KeyboardInterrupt  # as Ctrl-C or ComfyUI's interrupt inside the model

    callbacks = Callbacks(on_step=on_step, should_stop=lambda: ending == "cancelled" and trainer.run.step >= 2)
    if ending == "interrupted":
        with pytest.raises(KeyboardInterrupt):
            trainer.train(callbacks)
    else:
        assert trainer.train(callbacks).status == ending
    assert held and all(held) and not lock.exists()


def test_train_node_is_refused_while_another_run_holds_its_folder(comfy, tmp_path, monkeypatch):
    """The Train node's run folder is <loras>/<name>: a live run there refuses the node before its first step."""
    import folder_paths

    from tests.comfy_models import load_comfy
    from tests.engine_support import write_cache
    from trainer_core.ltxcore.tiny import write_tiny_checkpoint

    loras = tmp_path / "loras"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], {".safetensors"}))
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(loras / "itest")], cwd=REPO, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        model = load_comfy(write_tiny_checkpoint(tmp_path / "tiny.safetensors", seed=0))
        data = importlib.import_module(f"{comfy.__name__}.trainer_core.cache.reader").CachedData(
            write_cache(tmp_path / "c", [24])
        )
        locked = importlib.import_module(f"{comfy.__name__}.trainer_core.engine.run_lock").RunLockedError
        node = comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"]
        widgets = {"seed": 0, "name": "itest", "every": 2, "keep_last": 0, "config_yaml": "", "resume_from": ""}
        with pytest.raises(locked) as err, torch.inference_mode():
            node.execute(model=model, training_data=data, **widgets)
        _assert_names_the_holder(str(err.value), proc)
        assert sorted(p.name for p in (loras / "itest").iterdir()) == [LOCK_NAME]  # nothing of the live run touched
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
