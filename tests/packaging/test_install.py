"""The headless CLI works from any folder of the environment tools/setup_env.sh made, and the install of
``trainer_core`` puts nothing else of the repo on the import path (its ``nodes/`` would shadow ComfyUI's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETUP_HINT = "run `bash tools/setup_env.sh`, which installs trainer_core into .venv (editable)"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the environment itself provides
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_python_m_trainer_core_from_another_folder(tmp_path):
    done = _run([sys.executable, "-m", "trainer_core", "--help"], tmp_path)
    assert done.returncode == 0, f"{SETUP_HINT}\n{done.stderr}"
    assert "usage: python -m trainer_core" in done.stdout
    assert "dataset" in done.stdout and "train" in done.stdout


def test_console_script_from_another_folder(tmp_path):
    script = Path(sys.executable).parent / "ltx-lora"
    assert script.is_file(), f"no {script}: {SETUP_HINT}"
    done = _run([str(script), "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage: ltx-lora" in done.stdout
    failed = _run([str(script), "lora", "inspect", str(tmp_path / "missing.safetensors")], tmp_path)
    assert failed.returncode == 2 and "error:" in failed.stderr  # the CLI's own exit status, through the script


def test_install_maps_trainer_core_only(tmp_path):
    """Outside the repo, ``trainer_core`` is this checkout's and no other top-level name resolves into the repo:
    a ``nodes`` package there would shadow ComfyUI's own ``nodes`` module in ComfyUI's environment."""
    probe = (
        "import importlib.util, json\n"
        "names = ['trainer_core', 'nodes', 'bench', 'tests', 'tools', 'web', 'workflows', 'docs']\n"
        "specs = {n: importlib.util.find_spec(n) for n in names}\n"
        "print(json.dumps({n: s.origin if s and s.origin else (list(s.submodule_search_locations) if s else None)"
        " for n, s in specs.items()}))\n"
    )
    done = _run([sys.executable, "-c", probe], tmp_path)
    assert done.returncode == 0, done.stderr
    import json

    found = json.loads(done.stdout)
    assert found["trainer_core"] == str(REPO / "trainer_core" / "__init__.py"), SETUP_HINT
    inside_repo = {
        name: where
        for name, where in found.items()
        if name != "trainer_core" and where and str(REPO) in str(where)
    }
    assert not inside_repo
