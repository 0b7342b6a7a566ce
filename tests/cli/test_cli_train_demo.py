"""The headless CLI: the demo end to end, and `train CONFIG.yaml` with resume, on tiny built-in models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from trainer_core.cli import main
from trainer_core.demo import run_demo
from tests.engine_support import write_cache
from trainer_core.engine.checkpoints import list_checkpoints
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end_and_the_lora_moves_samples_toward_the_data(tmp_path):
    summary = run_demo(tmp_path / "demo", steps=40)
    assert summary.dataset_items == 6 and summary.excluded == 0 and summary.cached == 6
    assert summary.steps == 40 and summary.last_loss < summary.first_loss
    assert summary.loss_png.stat().st_size > 0 and summary.sweep_png.stat().st_size > 0
    with safe_open(str(summary.lora_path), "pt") as f:
        assert f.metadata()["ltxlora.trigger"] == "zxqstyle"
        assert any(k.endswith(".alpha") for k in f.keys())  # noqa: SIM118 - safe_open is not iterable
    assert summary.distances[1.0] < summary.distances[0.0]
    assert "strength sweep" in summary.text()


def test_demo_command_prints_a_summary(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "trainer_core", "demo", "--out", str(tmp_path / "d"), "--steps", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "trained 5 steps" in out.stdout and "LoRA:" in out.stdout


def test_train_command_from_yaml_then_resume_latest(tmp_path, capsys):
    demo = run_demo(tmp_path / "demo", steps=2)  # leaves a tiny checkpoint and a cache behind
    cfg = {
        "name": "cli",
        "output_dir": str(tmp_path / "run"),
        "data": str(tmp_path / "demo" / "cache"),
        "model": {"checkpoint": str(tmp_path / "demo" / "model" / "tiny_ltx23.safetensors"), "device": "cpu",
                  "dtype": "float32"},
        "lora": {"rank": 4, "alpha": 4},
        "optimization": {"steps": 4, "learning_rate": 1e-3},
        "checkpoints": {"every": 2},
        "memory": {"mixed_precision": "no"},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert demo.steps == 2
    assert main(["train", str(path)]) == 0
    assert [s for s, _ in list_checkpoints(tmp_path / "run", "cli")] == [2, 4]
    assert (tmp_path / "run" / "loss.png").is_file() and (tmp_path / "run" / "config.yaml").is_file()
    cfg["optimization"]["steps"] = 6
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--resume", "latest"]) == 0
    assert [s for s, _ in list_checkpoints(tmp_path / "run", "cli")] == [2, 4, 6]
    assert "completed at step 6" in capsys.readouterr().out


@pytest.mark.parametrize(("family", "text_dim"), [("ltx-2", 64), ("ltx-2.3", 96)])
def test_train_command_records_the_family_of_the_loaded_checkpoint(tmp_path, family, text_dim):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors", family=family)
    cfg = {
        "name": "fam",
        "output_dir": str(tmp_path / "run"),
        "data": str(write_cache(tmp_path / "cache", [24.0], text_dim=text_dim)),
        "model": {"checkpoint": str(checkpoint), "device": "cpu", "dtype": "float32"},
        "lora": {"rank": 4, "alpha": 4},
        "optimization": {"steps": 1},
        "memory": {"mixed_precision": "no"},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    with safe_open(str(tmp_path / "run" / "fam_step_00001.safetensors"), "pt") as f:
        assert f.metadata()["ltxlora.base_model"] == family  # what the checked loader compares with its MODEL


def test_train_command_reports_config_errors_by_field(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("lora:\n  rank: -3\n")
    assert main(["train", str(path)]) == 2
    assert "lora.rank" in capsys.readouterr().err
    path.write_text("lora:\n  rank: 8\n")
    assert main(["train", str(path)]) == 2
    assert "model.checkpoint is not set" in capsys.readouterr().err
