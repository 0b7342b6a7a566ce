"""The files the Train and Convert LoRA nodes read stay inside ComfyUI's folders: ``config_yaml`` in the input, user,
output or loras folders (a relative name: in the input folder), Convert's ``source`` in the loras or output folders,
``resume_from`` in the loras folder where the runs are. An absolute path elsewhere, a ``..`` climb or a symbolic link
out is refused when the prompt is queued (``validate_inputs``: no traceback) with a message naming the setting, the
value and the folders, alike whether or not the file exists, and again if the node runs with a linked value. A
value that cannot be a path (a null byte, a link loop) is refused the same way, naming the setting. The
CLI, run by a shell user, still reads any file it is given.

The same refusals through ComfyUI's own validation and executor: ``test_node_bad_inputs.py``.
"""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import pytest

from trainer_core.cli import main


@pytest.fixture
def roots(comfy, tmp_path, monkeypatch) -> types.SimpleNamespace:
    """ComfyUI's folders in ``tmp_path``, files inside them, and ``outside`` with what the links lead to."""
    import folder_paths

    f = types.SimpleNamespace(**{k: tmp_path / k for k in ("loras", "output", "input", "user", "outside")})
    for folder in vars(f).values():
        folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(f.loras)], {".safetensors"}))
    for kind in ("output", "input", "user"):
        monkeypatch.setattr(folder_paths, f"{kind}_directory", str(getattr(f, kind)))
    for folder in (f.loras, f.outside):
        (folder / "run").mkdir()
        (folder / "run" / "run_step_00002.safetensors").write_bytes(b"x")
    for folder in (f.loras, f.output, f.outside):
        (folder / "some.safetensors").write_bytes(b"x")
    for folder in (f.input, f.user, f.output, f.outside, f.loras / "run"):
        (folder / "config.yaml").write_text("name: from_yaml\n", encoding="utf-8")
    (f.loras / "link.safetensors").symlink_to(f.outside / "some.safetensors")
    (f.input / "link.yaml").symlink_to(f.outside / "config.yaml")
    (f.loras / "linked_run").symlink_to(f.outside / "run")
    f.config_error = importlib.import_module(f"{comfy.__name__}.trainer_core.config").ConfigError
    return f


def _outside_message(setting: str, value: str, folders: list[Path]) -> str:
    return (f"{setting} {value!r} lies outside the folders this node reads from ({', '.join(map(str, folders))}): "
            "move the file into one of them and give its path there")


# ---------------------------------------------------------------------------------------- Convert LoRA: source

CONVERT = {"output_name": "converted.safetensors", "fold_alpha": False, "dtype": "keep", "overwrite": False}


@pytest.mark.parametrize("value", ["{outside}/some.safetensors", "{outside}/gone.safetensors",
                                   "../outside/some.safetensors", "../../outside/gone.safetensors",
                                   "link.safetensors", "{loras}/link.safetensors"])
def test_convert_refuses_a_source_outside_the_loras_and_output_folders(comfy, roots, value):
    value = value.format(outside=roots.outside, loras=roots.loras)
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraConvert"]
    expected = _outside_message("source", value, [roots.loras, roots.output])
    assert node.validate_inputs(source=value, **CONVERT) == expected
    with pytest.raises(roots.config_error) as err:  # run with a linked value: the same refusal
        node.execute(source=value, **CONVERT)
    assert str(err.value) == expected


@pytest.mark.parametrize("value", ["some.safetensors", "{loras}/some.safetensors", "{output}/some.safetensors",
                                   "run/run_step_00002.safetensors", "run/../some.safetensors"])
def test_convert_takes_a_source_inside_them(comfy, roots, value):
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraConvert"]
    assert node.validate_inputs(source=value.format(loras=roots.loras, output=roots.output), **CONVERT) is True


def test_convert_names_where_it_looked_for_a_missing_source(comfy, roots):
    message = comfy.NODE_CLASS_MAPPINGS["LtxLoraConvert"].validate_inputs(source="nope.safetensors", **CONVERT)
    assert message.startswith(f"source 'nope.safetensors' not found in {roots.loras}, {roots.output}:")


# ---------------------------------------------------------------------------------------- Train: config_yaml

TRAIN = {"name": "new", "resume_from": "", "training_data": None}  # training_data linked: None when validating


@pytest.mark.parametrize("value", ["{outside}/config.yaml", "{outside}/gone.yaml", "../outside/config.yaml",
                                   "../../etc/hostname", "link.yaml", "{input}/link.yaml"])
def test_train_refuses_a_config_yaml_outside_comfyuis_folders(comfy, roots, value):
    value = value.format(outside=roots.outside, input=roots.input)
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"]
    expected = _outside_message("config_yaml", value, [roots.input, roots.user, roots.output, roots.loras])
    assert node.validate_inputs(config_yaml=value, **TRAIN) == expected
    with pytest.raises(roots.config_error) as err:
        node.execute(model=None, training_data=object(), seed=0, name="new", every=2, keep_last=0,
                     config_yaml=value, resume_from="")
    assert str(err.value) == expected


@pytest.mark.parametrize("value", ["config.yaml", "{input}/config.yaml", "{user}/config.yaml", "{output}/config.yaml",
                                   "{loras}/run/config.yaml"])
def test_train_takes_a_config_yaml_inside_them(comfy, roots, value):
    value = value.format(**vars(roots))
    assert comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"].validate_inputs(config_yaml=value, **TRAIN) is True


# ---------------------------------------------------------------------------------------- Train: resume_from


@pytest.mark.parametrize("value", ["{outside}/run", "{outside}/run/run_step_00002.safetensors", "{outside}/gone",
                                   "../../outside/run", "{loras}/linked_run"])
def test_train_refuses_resume_from_outside_the_loras_folder_before_the_run(comfy, roots, value):
    value = value.format(outside=roots.outside, loras=roots.loras)
    message = comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"].validate_inputs(**{**TRAIN, "resume_from": value})
    assert message == (
        f"resume_from {value!r} leads outside {roots.loras}, where this run's checkpoints and the other runs are; "
        "give 'latest', a checkpoint file or run folder inside it, or the name of a run"
    )


@pytest.mark.parametrize("value", ["latest", "run", "{loras}/run", "{loras}/run/run_step_00002.safetensors",
                                   "../run/run_step_00002.safetensors"])
def test_train_takes_resume_from_inside_it(comfy, roots, value):
    values = {**TRAIN, "resume_from": value.format(loras=roots.loras)}
    assert comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"].validate_inputs(**values) is True


# ---------------------------------------------------------------------------------------- names that are no path


@pytest.fixture
def link_loop(roots) -> str:
    """A symbolic link loop inside the loras and input folders: resolving it fails rather than leading anywhere."""
    for folder in (roots.loras, roots.input):
        (folder / "loop_a").symlink_to(folder / "loop_b")
        (folder / "loop_b").symlink_to(folder / "loop_a")
    return "loop_a/x"


@pytest.mark.parametrize("setting", ["source", "config_yaml", "resume_from"])
@pytest.mark.parametrize("value", ["bad\0name.safetensors", "{loop}"])
def test_a_value_that_is_no_path_is_refused_naming_the_setting(comfy, roots, link_loop, setting, value):
    """A null byte makes the operating system refuse the name, a link loop cannot be resolved: both are refused when
    queued, naming the setting and the value, and again if the node runs with a linked value (not a traceback)."""
    value = value.format(loop=link_loop)
    if setting == "source":
        node, values = comfy.NODE_CLASS_MAPPINGS["LtxLoraConvert"], {"source": value, **CONVERT}
        run = values
    else:
        node, values = comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"], {**TRAIN, setting: value}
        run = {"model": None, "training_data": object(), "seed": 0, "name": "new", "every": 2, "keep_last": 0,
               "config_yaml": "", "resume_from": "", setting: value}
    message = node.validate_inputs(**values)
    assert isinstance(message, str) and message.startswith(f"{setting} {value!r} cannot be used as a path ("), message
    with pytest.raises(roots.config_error) as err:
        node.execute(**run)
    assert str(err.value) == message


# ---------------------------------------------------------------------------------------- the CLI


def test_the_cli_still_reads_a_config_anywhere(roots, capsys):
    assert main(["config", "check", str(roots.outside / "config.yaml")]) == 0
    assert "error" not in capsys.readouterr().err
