"""The test suite itself is trustworthy: bare ``pytest`` at the root runs it, it finds the ComfyUI around the pack,
and a ComfyUI test that skips where ComfyUI is present (or in CI) fails instead of passing as green.

Each test runs pytest in a subprocess, as a user or CI would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.comfy_boot import find_comfyui

REPO = Path(__file__).resolve().parents[2]

SKIPPING_TEST = '''
import pytest

def test_through_the_fixture(comfy):
    pass

@pytest.mark.comfyui
def test_marked(tmp_path):
    pytest.skip("pretend a dependency is missing")
'''


def _pytest(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "COMFYUI_PATH", "PYTEST_ADDOPTS")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          env={**base, **(env or {})}, capture_output=True, text=True, timeout=600)


def test_bare_pytest_at_the_root_runs_the_tests():
    """The root is the ComfyUI package (its ``__init__.py``): pytest imports it while setting up the tests, so it
    must import cleanly outside ComfyUI."""
    done = _pytest(["-q", "tests/sweep/test_sweep_core.py"], REPO)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "error" not in done.stdout.lower()
    collected = _pytest(["--collect-only", "-q"], REPO)
    assert collected.returncode == 0 and "tests/cache/" in collected.stdout and "tests/engine/" in collected.stdout


def _harness_copy(tmp_path: Path) -> Path:
    """tests/ of this repo plus one test that skips through the ``comfy`` fixture."""
    copy = tmp_path / "pack"
    shutil.copytree(REPO / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pytest.ini", copy / "pytest.ini")
    (copy / "tests" / "test_skipping.py").write_text(SKIPPING_TEST)
    return copy


def test_a_skipped_comfyui_test_fails_where_comfyui_is_present(tmp_path):
    root = find_comfyui()
    assert root is not None, "this test needs the ComfyUI the suite runs with"
    copy = _harness_copy(tmp_path)
    done = _pytest(["-q", "tests/test_skipping.py::test_marked"], copy, {"COMFYUI_PATH": str(root)})
    assert done.returncode == 1 and "1 failed" in done.stdout, done.stdout[-2000:]
    assert "a ComfyUI test skipped" in done.stdout


def test_without_comfyui_the_tests_skip_loudly_but_ci_fails(tmp_path):
    copy = _harness_copy(tmp_path)
    home = {"HOME": str(tmp_path / "home")}  # no ~/.cache/comfyui-v0.33 there
    skipped = _pytest(["-q", "-rs", "tests/test_skipping.py::test_through_the_fixture"], copy, home)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout and "NO COMFYUI FOUND" in skipped.stdout
    in_ci = _pytest(["-q", "tests/test_skipping.py::test_through_the_fixture"], copy, {**home, "CI": "true"})
    assert in_ci.returncode == 1 and "NO COMFYUI FOUND" in in_ci.stdout, in_ci.stdout[-2000:]


def test_the_pack_inside_comfyui_custom_nodes_finds_that_comfyui(tmp_path):
    """Cloned into ``ComfyUI/custom_nodes/`` (where users put it), with no COMFYUI_PATH and no ~/.cache copy, the
    ComfyUI tests run against the ComfyUI around the pack."""
    real = find_comfyui()
    assert real is not None, "this test needs the ComfyUI the suite runs with"
    comfyui = tmp_path / "ComfyUI"
    comfyui.mkdir()
    for entry in real.iterdir():
        if entry.name not in ("custom_nodes", "user", "output", "input", "temp"):
            (comfyui / entry.name).symlink_to(entry)
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    pack = comfyui / "custom_nodes" / "comfyui-ltx-lora-trainer"
    for name in files:
        (pack / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, pack / name)
    one = "tests/node_schema/test_comfy_nodes_registered.py::test_every_pack_node_is_registered_in_comfyui"
    done = _pytest([one], pack, {"HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"ComfyUI: {comfyui}" in done.stdout and "1 passed" in done.stdout
