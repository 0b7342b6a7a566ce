"""Run names and resume paths stay inside their folders: climbs, absolute paths and symlinks out are refused with a
clear error, the same whether or not anything exists outside."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from trainer_core.cli import main
from trainer_core.config import ConfigError, parse_section
from trainer_core.config.training import TrainConfig
from trainer_core.engine.checkpoints import resolve_resume

BAD_NAMES = ["../escape", "/tmp/escape", "sub/run", "sub\\run", "..", ".", "", " padded", "C:run"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_run_name_that_leaves_its_folder_is_a_config_error(name):
    with pytest.raises(ConfigError, match=r"name = .*the run name must be a plain name"):
        parse_section(TrainConfig, {"name": name})


def test_plain_names_are_kept():
    assert parse_section(TrainConfig, {"name": "my.style-lora_v2..final"}).name == "my.style-lora_v2..final"


def test_cli_train_with_a_climbing_name_writes_nothing(tmp_path, capsys):
    cfg = {"output_dir": str(tmp_path / "runs" / "a"), "name": "../../escaped", "data": str(tmp_path / "cache"),
           "model": {"checkpoint": str(tmp_path / "none.safetensors"), "device": "cpu"}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "train.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "the run name must be a plain name" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.yaml"]


def _run_with_checkpoint(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    ckpt = folder / f"{name}_step_00002.safetensors"
    ckpt.write_bytes(b"x")
    return ckpt


@pytest.fixture
def loras(tmp_path) -> Path:
    """A loras folder with run 'mine', and a run 'secret' outside it."""
    _run_with_checkpoint(tmp_path / "loras" / "mine", "mine")
    _run_with_checkpoint(tmp_path / "private" / "secret", "secret")
    return tmp_path / "loras"


@pytest.mark.parametrize("value", ["../../private/secret", "../../private/secret/secret_step_00002.safetensors",
                                   "{tmp}/private/secret", "{tmp}/private/gone", "../../../../etc", "~"])
def test_resume_outside_the_loras_folder_is_refused_alike_whether_it_exists_or_not(loras, value):
    value = value.format(tmp=loras.parent)
    with pytest.raises(ConfigError) as err:
        resolve_resume(value, loras / "new", "new", within=loras)
    assert str(err.value) == (
        f"resume_from {value!r} leads outside {loras}, where this run's checkpoints and the other runs are; give "
        "'latest', a checkpoint file or run folder inside it, or the name of a run"
    )


@pytest.mark.parametrize("value", ["../private/secret", "link"])
def test_candidates_outside_are_never_looked_at(loras, value):
    """'../private/secret' is inside from the run folder but outside from the loras folder; 'link' is a symlink out."""
    (loras / "link").symlink_to(loras.parent / "private" / "secret")
    with pytest.raises(ConfigError, match="no checkpoint file or run folder") as err:
        resolve_resume(value, loras / "new", "new", within=loras)
    assert f"checkpoints at {loras / 'new' / value}; give" in str(err.value)  # the one place inside, only


def test_resume_inside_the_loras_folder_still_works(loras):
    mine = loras / "mine" / "mine_step_00002.safetensors"
    (loras / "new").mkdir()
    assert resolve_resume(str(mine), loras / "new", "new", within=loras) == mine
    assert resolve_resume("../mine/mine_step_00002.safetensors", loras / "new", "new", within=loras).resolve() == mine
    assert resolve_resume("mine/mine_step_00002.safetensors", loras / "new", "new", within=loras).resolve() == mine


def _train_node(comfy, loras: Path, monkeypatch, **widgets):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], {".safetensors"}))
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"]
    values = {"seed": 0, "name": "new", "every": 2, "keep_last": 0, "config_yaml": "", "resume_from": "", **widgets}
    # Refused before the model or the data are touched: neither is needed here.
    return node.execute(model=None, training_data=object(), **values)


@pytest.mark.parametrize("name", ["../escaped", str(Path("/tmp") / "escaped"), "a/b"])
def test_train_node_refuses_a_climbing_run_name(comfy, loras, monkeypatch, name):
    errors = sys.modules[comfy.__name__ + ".trainer_core.config"]
    with pytest.raises(errors.ConfigError, match="the run name must be a plain name"):
        _train_node(comfy, loras, monkeypatch, name=name)
    assert sorted(p.name for p in loras.parent.iterdir()) == ["loras", "private"]


def test_train_node_refuses_resume_from_outside_the_loras_folder(comfy, loras, monkeypatch):
    errors = sys.modules[comfy.__name__ + ".trainer_core.config"]
    with pytest.raises(errors.ConfigError, match="leads outside"):
        _train_node(comfy, loras, monkeypatch, resume_from="../../private/secret")
