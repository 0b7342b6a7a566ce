"""The Train node started from a YAML file in ComfyUI's input folder: a config.yaml written by the CLI, and an
ltx-trainer config whose data is an ltx-trainer ``.precomputed`` folder (no training_data socket: the node reads the
YAML's data)."""

from __future__ import annotations

import pytest
import torch
import yaml

from tests.engine_support import write_cache, write_precomputed
from trainer_core.cli import main


def _run(node, model, name: str, config_yaml: str):
    widgets = {"seed": 0, "name": name, "every": 100, "keep_last": 0, "config_yaml": config_yaml, "resume_from": ""}
    with torch.inference_mode():
        return node.execute(model=model, **widgets)


@pytest.fixture
def input_dir(tmp_path, monkeypatch):
    """ComfyUI's input folder, where the Train node reads a config_yaml given by name."""
    import folder_paths

    (tmp_path / "input").mkdir()
    monkeypatch.setattr(folder_paths, "input_directory", str(tmp_path / "input"))
    return tmp_path / "input"


def test_the_clis_config_yaml_trains_in_the_node(setup, tmp_path, input_dir):
    node, model, ckpt, loras = setup
    cache = write_cache(tmp_path / "cache", [24.0, 24.0])
    cli = {"name": "cli", "output_dir": str(input_dir / "run"), "data": str(cache),
           "model": {"checkpoint": str(ckpt), "dtype": "float32"}, "lora": {"rank": 4, "alpha": 4},
           "optimization": {"steps": 3, "learning_rate": 1e-3}, "memory": {"mixed_precision": "no"}}
    (tmp_path / "cli.yaml").write_text(yaml.safe_dump(cli))
    assert main(["train", str(tmp_path / "cli.yaml")]) == 0
    cli_run = yaml.safe_load((input_dir / "run" / "config.yaml").read_text())
    assert cli_run["model"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # model.device auto, resolved
    out = _run(node, model, "from_cli", "run/config.yaml")
    assert len(out.result[2]["loss"]) == 3 and out.result[1].endswith("from_cli/from_cli_step_00003.safetensors")
    recorded = yaml.safe_load((loras / "from_cli" / "config.yaml").read_text())
    assert recorded["data"] == str(cache.resolve()) and recorded["lora"]["rank"] == 4


def test_an_ltx_trainer_config_on_its_precomputed_folder_trains_in_the_node(setup, tmp_path, input_dir):
    node, model, ckpt, loras = setup
    write_precomputed(tmp_path / "ds", ["a.mp4", "b.mp4"])
    foreign = {"model": {"model_path": str(ckpt), "text_encoder_path": "/nowhere/gemma"},
               "lora": {"rank": 4, "alpha": 4}, "optimization": {"steps": 2, "batch_size": 1},
               "acceleration": {"mixed_precision_mode": "no"},
               "data": {"preprocessed_data_root": str(tmp_path / "ds")}, "hub": {"push_to_hub": False}}
    (input_dir / "ltx_trainer.yaml").write_text(yaml.safe_dump(foreign))
    out = _run(node, model, "from_ltx_trainer", str(input_dir / "ltx_trainer.yaml"))
    assert len(out.result[2]["loss"]) == 2
    recorded = yaml.safe_load((loras / "from_ltx_trainer" / "config.yaml").read_text())
    assert recorded["data"] == str((loras / "from_ltx_trainer" / "ltx_trainer_cache").resolve())
    assert recorded["optimization"]["learning_rate"] == 5e-4  # ltx-trainer's default for the omitted key
