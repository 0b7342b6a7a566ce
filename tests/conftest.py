"""Shared fixtures. ComfyUI tests use the ``comfy`` fixture and skip loudly when no ComfyUI tree is found."""

from __future__ import annotations

import os
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
        if os.environ.get("CI") == "true":  # CI sets ComfyUI up from shared/: its absence is a broken set-up
            pytest.fail(_SKIP_REASON)
        warnings.warn(_SKIP_REASON, stacklevel=1)
        pytest.skip(_SKIP_REASON)
    return boot(root)


def pytest_report_header(config):
    root = find_comfyui()
    return f"ComfyUI: {root}" if root else f"ComfyUI: {_SKIP_REASON}"


def pytest_collection_modifyitems(config, items):
    """Every test that needs ComfyUI reaches it through the ``comfy`` fixture, so the marker follows from the
    fixture closure: ``-m "not comfyui"`` is then exactly the set that runs without ComfyUI."""
    for item in items:
        if "comfy" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.comfyui)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped ComfyUI test fails in CI (which sets ComfyUI up) and wherever ComfyUI is present: a broken boot or
    a missing package must not turn the integration tests into a green run that tested nothing. Only a user's
    machine without Chromium may skip the browser tests."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and item.get_closest_marker("comfyui")):
        return
    in_ci = os.environ.get("CI") == "true"
    reason = str(report.longrepr)
    if in_ci or (find_comfyui() is not None and "NO CHROMIUM" not in reason):
        report.outcome = "failed"
        report.longrepr = f"a ComfyUI test skipped (ComfyUI: {find_comfyui()}, CI: {in_ci}): {reason}"


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

