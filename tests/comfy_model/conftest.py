"""Fixtures shared by the Train node tests of this folder."""

from __future__ import annotations

import pytest

from tests.comfy_models import load_comfy
from trainer_core.ltxcore.tiny import write_tiny_checkpoint


@pytest.fixture()
def setup(comfy, tmp_path, monkeypatch):
    """(Train node class, the tiny audio+video checkpoint as ComfyUI loads it, its path, the loras folder)."""
    import folder_paths

    loras = tmp_path / "loras"
    loras.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], {".safetensors"}))
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.safetensors", audio=True, seed=0)
    return comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"], load_comfy(ckpt), ckpt, loras
