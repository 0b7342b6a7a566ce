"""The Sweep node reads LoRAs only from ComfyUI's loras folders (where the Train node writes its runs): an absolute
path elsewhere, a ``..`` climb or a symbolic link out is refused with a message naming the entry and the folders,
both when the prompt is queued (``validate_inputs``) and when the node runs. The HTTP route keeps answering such an
entry exactly as a missing one, and the CLI (a shell user) may still name any file."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from trainer_core.sweep.plan import SweepError, resolve_lora_files

WIDGETS = {"strengths": "0, 1.0", "seeds": "1", "max_cells": 48, "model": None, "with_trigger": None}


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """(loras folder with one LoRA, a folder outside it with another)."""
    loras, outside = tmp_path / "loras", tmp_path / "elsewhere"
    loras.mkdir()
    outside.mkdir()
    (loras / "inside.safetensors").write_bytes(b"x")
    (outside / "secret.safetensors").write_bytes(b"x")
    (loras / "link.safetensors").symlink_to(outside / "secret.safetensors")
    return loras, outside


@pytest.mark.parametrize("entry", ["{outside}/secret.safetensors", "../elsewhere/secret.safetensors",
                                   "link.safetensors"])
def test_node_refuses_a_lora_outside_the_loras_folders(comfy, folders, monkeypatch, entry):
    import folder_paths

    loras, outside = folders
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], {".safetensors"}))
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraSweep"]
    entry = entry.format(outside=outside)
    message = node.validate_inputs(loras=entry, **WIDGETS)
    assert message == (f"loras: {entry!r} lies outside the LoRA folders ({loras}); the node reads LoRAs only from "
                       "there: copy or move the file into models/loras, or give its name there")
    pack_error = importlib.import_module(f"{comfy.__name__}.trainer_core.sweep.plan").SweepError
    with pytest.raises(pack_error, match="lies outside the LoRA folders"):  # the node's execute, linked inputs given
        node.execute(model=None, loras=entry, strengths="0, 1.0", seeds="1", max_cells=48, with_trigger=object())
    assert node.validate_inputs(loras=str(loras / "inside.safetensors"), **WIDGETS) is True  # absolute, inside
    assert node.validate_inputs(loras="inside.safetensors", **WIDGETS) is True


def test_route_still_answers_outside_as_missing_and_the_cli_reads_anywhere(folders):
    loras, outside = folders
    with pytest.raises(SweepError) as hidden:
        resolve_lora_files(str(outside / "secret.safetensors"), [loras], confined=True)
    with pytest.raises(SweepError) as missing:
        resolve_lora_files(str(outside / "nothing.safetensors"), [loras], confined=True)
    assert str(hidden.value).replace("secret", "nothing") == str(missing.value)
    assert resolve_lora_files(str(outside / "secret.safetensors"), [Path.cwd()]) == [outside / "secret.safetensors"]
