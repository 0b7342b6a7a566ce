"""tools/setup_env.sh prints nothing alarming: no ERROR, no NumPy warning, nothing in red.

It installs into .venv, the environment this test runs in, and takes a minute or more, so it runs only on request:
``LTX_TEST_SETUP=1 .venv/bin/python -m pytest tests/packaging/test_setup_env.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MACHINE_PIP_CONFIG = re.compile(r"^WARNING: Location 'file:.*' is ignored")  # a pip.conf naming absent mirrors
ALARMING = re.compile(r"ERROR|Failed to initialize NumPy|Traceback|\x1b\[(?:1;)?31m")


@pytest.mark.skipif(os.environ.get("LTX_TEST_SETUP") != "1", reason="set LTX_TEST_SETUP=1 to rerun the set-up")
def test_setup_env_output_is_clean():
    done = subprocess.run(
        ["bash", "tools/setup_env.sh"], cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "SKIP_CHROMIUM": os.environ.get("SKIP_CHROMIUM", "1")},
    )
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if not MACHINE_PIP_CONFIG.match(ln)]
    assert done.returncode == 0, "\n".join(lines)
    assert not [ln for ln in lines if ALARMING.search(ln)], "\n".join(lines)
    assert lines[-1] == "environment ready: .venv"
