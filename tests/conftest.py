"""Shared fixtures. ComfyUI tests use the ``comfy`` fixture and skip loudly when no ComfyUI tree is found."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.comfy_boot import boot, find_comfyui  # noqa: E402

_SKIP_REASON = (
    "NO COMFYUI FOUND: the ComfyUI integration tests did NOT run. Set COMFYUI_PATH to a ComfyUI v0.33 tree or "
    "install one at ~/.cache/comfyui-v0.33 (see the README, 'Running the ComfyUI tests')."
)


@pytest.fixture(scope="session")
def comfy():
    """The pack module as loaded by a real ComfyUI (ComfyUI's modules are then importable)."""
    root = find_comfyui()
    if root is None:
        warnings.warn(_SKIP_REASON, stacklevel=1)
        pytest.skip(_SKIP_REASON)
    return boot(root)


def pytest_report_header(config):
    root = find_comfyui()
    return f"ComfyUI: {root}" if root else f"ComfyUI: {_SKIP_REASON}"


@pytest.fixture()
def fresh_compiler(comfy, monkeypatch):
    """Compiled blocks from scratch: torch.compile's caches are reset, so a test sees (and counts) its own compiles,
    whatever ran before. ComfyUI's CPU attention (sub-quadratic) asks psutil for free memory, which torch.compile
    cannot trace; GPUs use PyTorch attention, so these tests select it too."""
    import comfy.ldm.modules.attention as attention
    import torch._dynamo

    from trainer_core.comfy.blocks import compiled_block_forward

    monkeypatch.setattr(attention, "optimized_attention", attention.attention_pytorch)
    torch._dynamo.reset()
    compiled_block_forward.cache_clear()

