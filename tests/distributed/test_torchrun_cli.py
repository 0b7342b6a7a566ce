"""`torchrun --nproc_per_node 2 -m trainer_core train CONFIG.yaml` (and the same through `accelerate launch`) on
the CPU (gloo) with the tiny model and cache; a process failing alone ends the run with its message."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.engine_support import write_cache
from trainer_core.cli import main
from trainer_core.engine.checkpoints import list_checkpoints
from trainer_core.engine.distributed import DataParallel, RendezvousFailed
from trainer_core.engine.state import checkpoint_problem
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _config(tmp: Path, name: str, batch: int, **extra) -> Path:
    cfg = {
        "name": "cli",
        "output_dir": str(tmp / name),
        "data": str(tmp / "cache"),
        "model": {"checkpoint": str(tmp / "tiny.safetensors"), "device": "cpu", "dtype": "float32"},
        "lora": {"rank": 4, "alpha": 4},
        "optimization": {"steps": 2, "learning_rate": 1e-2, "batch_size": batch},
        "recipe": {"caption_dropout": 0.0},  # the cache's empty caption is shorter than its captions: no batch of 2
        "checkpoints": {"every": 1},
        "memory": {"mixed_precision": "no"},
        **extra,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# The launchers' own commands for 2 processes. accelerate comes with ltx-core, which the headless CLI needs;
# `accelerate launch --multi_gpu` is torchrun inside (its --cpu starts one process, whatever --num_processes says).
LAUNCHERS = {
    "torchrun": ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"],
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_launcher_trains_two_processes_like_one_with_their_global_batch(tmp_path, launcher):
    write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    write_cache(tmp_path / "cache", [24.0, 24.0, 24.0])
    # HF_HOME: no accelerate config of this machine's user is read.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [sys.executable, "-m", *LAUNCHERS[launcher], "-m", "trainer_core", "train", str(_config(tmp_path, "ranks", 1))],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False, env=env,
    )
    assert out.returncode == 0, out.stderr
    # Rank 0 alone reports and logs.
    assert out.stdout.count("completed at step 2") == 1, out.stdout
    assert out.stderr.count("saved checkpoint") == 2, out.stderr
    ranks = dict(list_checkpoints(tmp_path / "ranks", "cli"))
    assert sorted(ranks) == [1, 2]
    state = json.loads(ranks[2].with_name("cli_step_00002.state.json").read_text())
    assert state["data"]["processes"] == 2

    assert main(["train", str(_config(tmp_path, "single", 2))]) == 0
    single = load_file(str(dict(list_checkpoints(tmp_path / "single", "cli"))[2]))
    got = load_file(str(ranks[2]))
    assert got.keys() == single.keys()
    # Over the whole LoRA: in this cache one layer (block 0's cross-attention query) has a true gradient of ~0, and
    # Adam's first steps blow its rounding noise (batch of 1 vs 2 in a matmul) up to ~1.5e-4 of that layer alone.
    diff = sum((got[k] - single[k]).pow(2).sum() for k in single).sqrt()
    assert diff <= 1e-4 * sum(t.pow(2).sum() for t in single.values()).sqrt()


def _launcher_reports(stderr: str) -> dict[int, str]:
    """torchrun's summary of a failed run: each failed rank's reported message (its error file's)."""
    summary = stderr.split("Failures:", 1)[1]
    found = re.findall(r"rank +: (\d+) .*?traceback : (.*?)\n(?:-|=|\[)", summary, re.S)
    return {int(rank): message for rank, message in found}


@pytest.mark.parametrize(
    ("strategy", "where", "every", "fault", "kept"),
    [
        ("fsdp", "1:3", 1, "block 1 failed in its forward (injected on rank 1, step 3)", [1, 2]),
        ("fsdp", "0:3", 4, "block 1 failed in its forward (injected on rank 0, step 3)", [2]),
        ("ddp", "1:load", 1, "the checkpoint could not be read (injected on rank 1)", []),
    ],
)
def test_a_process_failing_alone_stops_every_process_and_the_launcher_names_its_error(
    tmp_path, strategy, where, every, fault, kept
):
    # fsdp: a process's block raises in step 3's forward, when the other waits in that step's weight gathers; rank 0
    # failing there first saves the 2 steps completed since the last checkpoint. ddp: rank 1 cannot load the model,
    # while rank 0 goes on to start the run. Neither failure reaches the other process.
    write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    write_cache(tmp_path / "cache", [24.0, 24.0, 24.0])
    path = _config(tmp_path, "ranks", 1, distributed={"strategy": strategy}, checkpoints={"every": every},
                   optimization={"steps": 4, "learning_rate": 1e-2, "batch_size": 1})
    out = subprocess.run(  # the timeout is the test: a process left waiting in a collective hangs for 10 minutes
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(Path(__file__).with_name("failing_rank.py")), where, "--", "train", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    rank = int(where.split(":")[0])
    assert out.returncode != 0
    assert f"error: {fault}" in out.stderr  # the failing process's own line
    assert _launcher_reports(out.stderr)[rank] == fault, out.stderr[-3000:]  # and the launcher's last words
    # The checkpoints written before the failure (and by a failing rank 0) are the last ones and intact.
    written = dict(list_checkpoints(tmp_path / "ranks", "cli"))
    assert sorted(written) == kept
    assert all(checkpoint_problem(p) is None for p in written.values())


def test_more_processes_than_gpus_on_a_machine_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    # The second of two processes on a machine with one GPU (torch's view faked: this machine has none).
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    path = _config(tmp_path, "run", 1, model={"checkpoint": str(tmp_path / "tiny.safetensors"), "device": "cuda"})
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "this is process 1 (LOCAL_RANK)" in err and "which has 1 GPU(s)" in err
    assert "--nproc_per_node" in err
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _by_hand(rank: int, port: int | str, **extra: str) -> dict[str, str]:
    """The variables a launcher sets for process ``rank`` of 2 on this machine, set without one."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), **extra}


def test_a_failing_process_prints_its_own_error_when_the_launchers_error_file_cannot_be_written(tmp_path):
    # Two processes started by hand (torchrun always gives its own, writable error file): rank 1 fails loading the
    # model, where it leaves its message for the launcher in a folder that does not exist.
    write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    write_cache(tmp_path / "cache", [24.0, 24.0, 24.0])
    path, port = _config(tmp_path, "ranks", 1), _free_port()
    error_file = tmp_path / "missing" / "error.json"
    cmd = [sys.executable, str(Path(__file__).with_name("failing_rank.py")), "1:load", "--", "train", str(path)]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={
            **os.environ, "OMP_NUM_THREADS": "1", **_by_hand(rank, port, TORCHELASTIC_ERROR_FILE=str(error_file))})
        for rank in (0, 1)
    ]
    try:
        _, err = procs[1].communicate(timeout=120)
    finally:
        procs[0].kill()  # left waiting for rank 1, as under torchrun until the launcher stops it
        procs[0].communicate()
    assert procs[1].returncode == 2, err[-3000:]
    assert "error: the checkpoint could not be read (injected on rank 1)" in err
    assert "Traceback" not in err and "error.json" not in err
    assert not error_file.parent.exists()


def test_a_process_that_cannot_join_the_others_names_the_launcher_settings_and_tells_the_launcher(
    tmp_path, monkeypatch, capsys
):
    # The launcher's variables set by hand with a port that is no number: the rendezvous fails at once.
    for name, value in _by_hand(1, "29x00", TORCHELASTIC_ERROR_FILE=str(tmp_path / "error.json")).items():
        monkeypatch.setenv(name, value)
    assert main(["train", str(_config(tmp_path, "run", 1))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: process 1 of 2 (RANK, WORLD_SIZE) could not join the other processes at "
                          "MASTER_ADDR=127.0.0.1, MASTER_PORT=29x00"), err
    assert "Traceback" not in err
    assert "--nproc_per_node" in err and "--master_port" in err
    message = json.loads((tmp_path / "error.json").read_text())["message"]
    assert err == f"error: {message}\n"  # the launcher's summary shows the same
    assert not (tmp_path / "run").exists()


def test_joining_waits_for_the_other_processes_up_to_the_timeout_then_names_the_address(monkeypatch):
    # Process 1 of 2 and nobody at the address: it waits its timeout for rank 0's store, then says where it looked.
    port = _free_port()
    for name, value in _by_hand(1, port).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RendezvousFailed) as caught:
        DataParallel.start("cpu", timeout=timedelta(seconds=1))
    message = str(caught.value)
    assert f"at MASTER_ADDR=127.0.0.1, MASTER_PORT={port} (waiting up to 1 s for them)" in message
    assert "timed out" in message
