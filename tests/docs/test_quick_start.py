"""The README's Quick start leaves the checkout clean: what its demo writes is ignored by git."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _quick_start() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme[readme.index("## Quick start") : readme.index("\n## ", readme.index("## Quick start") + 1)]


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_demo_outputs_are_ignored_by_git():
    section = _quick_start()
    out_dir = re.search(r"trainer_core demo --out (\S+)", section).group(1)
    named = re.findall(rf"`({re.escape(out_dir)}/[^`]+)`", section)  # the files the README says the demo writes
    assert len(named) >= 3, section
    done = subprocess.run(["git", "check-ignore", "--no-index", *named], cwd=REPO, capture_output=True, text=True)
    assert sorted(done.stdout.split()) == sorted(named), f"not ignored: {set(named) - set(done.stdout.split())}"
