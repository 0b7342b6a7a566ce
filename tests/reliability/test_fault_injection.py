"""Fault injection on the headless CLI: kill -9 training and caching at seeded points, then resume.

A child process is killed (``os._exit``, as kill -9: no ``finally``, no cleanup) right before the Nth file of
the run would be made durable, i.e. in the middle of a checkpoint's or the manifest's save, or by the parent at a
seeded moment. Only the killed runs are subprocesses; the reference and the resumed runs call the CLI in-process
(the same code, and seconds of imports fewer). The resumed run must end bit-identical to an uninterrupted one (the README's resume guarantee),
with no temp files left; the killed cache must resume with the items it recorded.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.dataset_media import write_video
from tests.engine_support import write_cache
from trainer_core.cache import CachedData
from trainer_core.cli import main
from trainer_core.engine.checkpoints import list_checkpoints
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) runs the headless training")

REPO = Path(__file__).resolve().parents[2]
STEPS = 6

# The CLI with os.fsync patched: the KILL_AT_FSYNC-th file the process makes durable kills it (exit 137) before
# the file gets its final name. FLUSH_EVERY_ITEM makes the cache save its manifest after every item.
_CHILD = """
import os, runpy, sys
count, real, kill_at = [0], os.fsync, int(os.environ.get("KILL_AT_FSYNC", "0"))
def fsync(fd):
    count[0] += 1
    if count[0] == kill_at:
        os._exit(137)
    real(fd)
os.fsync = fsync
if os.environ.get("FLUSH_EVERY_ITEM"):
    import trainer_core.cache.writer as writer
    writer._MANIFEST_FLUSH_SECONDS = -1.0
sys.argv = ["trainer_core", *sys.argv[1:]]
runpy.run_module("trainer_core", run_name="__main__")
"""


def _cli(*args: str, kill_at: int = 0, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    child_env = {**os.environ, "KILL_AT_FSYNC": str(kill_at), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", _CHILD, *args], cwd=REPO, env=child_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny checkpoint, a cache, a training config and the uninterrupted run's final LoRA and state."""
    root = tmp_path_factory.mktemp("faults")
    ckpt = write_tiny_checkpoint(root / "tiny.safetensors", seed=0)
    cache = write_cache(root / "cache", [24.0, 24.0, 24.0])

    def config(run: Path) -> Path:
        cfg = {"name": "f", "output_dir": str(run), "data": str(cache), "seed": 3,
               "model": {"checkpoint": str(ckpt), "device": "cpu", "dtype": "float32"},
               "lora": {"rank": 4, "alpha": 4}, "optimization": {"steps": STEPS, "learning_rate": 1e-3},
               "checkpoints": {"every": 2}, "memory": {"mixed_precision": "no", "gradient_checkpointing": False}}
        path = run.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(cfg))
        return path

    assert main(["train", str(config(root / "ref"))]) == 0
    return {"root": root, "ckpt": ckpt, "config": config, "final": _final(root / "ref")}


def _final(run: Path) -> dict:
    lora = run / f"f_step_{STEPS:05d}.safetensors"
    state = json.loads(lora.with_name(lora.stem + ".state.json").read_text())
    # Timings differ run to run, and so do the checksums (the LoRA's metadata names the output folder).
    return {"lora": load_file(str(lora)), "state": {k: v for k, v in state.items() if k not in _RUN_SPECIFIC}}


_RUN_SPECIFIC = ("seconds", "files", "checksum")


def _resume_to_the_end(run: Path, config: Path) -> None:
    resume = ["--resume", "latest"] if list_checkpoints(run, "f") else []
    assert main(["train", str(config), *resume]) == 0


def _assert_equals_uninterrupted(setup: dict, run: Path) -> None:
    final = _final(run)
    assert final["lora"].keys() == setup["final"]["lora"].keys()
    for key, value in setup["final"]["lora"].items():
        assert value.equal(final["lora"][key]), key
    assert final["state"] == setup["final"]["state"]  # step, losses, data position, scheduler, optimizer
    assert not list(run.glob(".*.tmp"))


# fsync 1 is config.yaml; each checkpoint makes 3 files durable (state tensors, LoRA, state JSON), then loss.png:
# 6 dies in step 4's LoRA file, 7 in its state JSON (the LoRA and tensors are there: a damaged checkpoint),
# 8 in step 6's state tensors.
@pytest.mark.parametrize("kill_at", [6, 7, 8])
def test_training_killed_during_a_save_resumes_equal_to_an_uninterrupted_run(setup, kill_at, caplog):
    run = setup["root"] / f"killed_save_{kill_at}"
    code, log = _finish(_cli("train", str(setup["config"](run)), kill_at=kill_at))
    assert code == 137, log
    assert list(run.glob(".*.tmp"))  # the write the kill interrupted left its temp file
    caplog.set_level(logging.INFO)
    _resume_to_the_end(run, setup["config"](run))
    assert ("f_step_00004.safetensors is damaged, skipped" in caplog.text) == (kill_at == 7)
    assert "left by a save that was interrupted" in caplog.text
    _assert_equals_uninterrupted(setup, run)


@pytest.mark.parametrize("seed", [0, 1])
def test_training_killed_at_a_random_moment_resumes_equal_to_an_uninterrupted_run(setup, seed):
    run = setup["root"] / f"killed_random_{seed}"
    proc = _cli("train", str(setup["config"](run)))
    # A seeded moment after the first checkpoint is complete: once `files` checkpoint files exist (3 per
    # checkpoint), plus a seeded few milliseconds; the run must still be going then.
    rng = random.Random(seed)
    files, delay = rng.randint(3, 6), rng.uniform(0.0, 0.05)
    while len([p for p in run.glob("f_step_*") if p.suffix != ".tmp"]) < files and proc.poll() is None:
        time.sleep(0.002)
    time.sleep(delay)
    proc.kill()
    _finish(proc)
    assert proc.returncode == -9, "the run ended before the kill"
    _resume_to_the_end(run, setup["config"](run))
    _assert_equals_uninterrupted(setup, run)


# Durable files in order: the empty caption, then per item its latent, its caption and the manifest: 4 dies in
# the first manifest save (no manifest yet, only its temp file), 10 in the third (the manifest holds two items).
@pytest.mark.parametrize(("kill_at", "recorded"), [(4, 0), (10, 2)])
def test_cache_killed_while_writing_its_manifest_resumes_where_it_stopped(setup, tmp_path, capsys, kill_at, recorded):
    dataset = tmp_path / "ds"
    dataset.mkdir()
    for i in range(4):
        write_video(dataset / f"clip{i}.mp4", frames=9 + i, size=(64, 64))  # distinct files, trimmed to 9
        (dataset / f"clip{i}.txt").write_text(f"clip {i}")
    args = ("cache", str(dataset), "--checkpoint", str(setup["ckpt"]), "--buckets", "64x64x9", "--skip-audio")
    code, log = _finish(_cli(*args, "--out", str(tmp_path / "c"), kill_at=kill_at, env={"FLUSH_EVERY_ITEM": "1"}))
    assert code == 137, log
    assert list((tmp_path / "c").glob(".manifest.json.*.tmp"))
    assert main([*args, "--out", str(tmp_path / "c")]) == 0
    log = capsys.readouterr().out
    assert f"{4 - recorded} clips encoded" in log and f"{recorded} unchanged" in log
    assert not list((tmp_path / "c").rglob("*.tmp"))
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    resumed, ref = CachedData(tmp_path / "c"), CachedData(tmp_path / "ref")
    assert [r.id for r in resumed.records] == [r.id for r in ref.records] == [f"clip{i}.mp4" for i in range(4)]
    # Tensors, not file hashes: safetensors orders a text file's two metadata keys differently per process.
    for i in range(len(ref)):
        assert resumed[i].video.equal(ref[i].video) and resumed[i].text.equal(ref[i].text)
