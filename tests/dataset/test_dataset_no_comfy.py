"""trainer_core and the dataset modules import and work without ComfyUI (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import trainer_core, trainer_core.frames, trainer_core.commands.dataset, trainer_core.config.dataset
from trainer_core.dataset import load_dataset, build_report, report_text
from trainer_core.dataset import buckets, captions, contact_sheet, loader, media, prepare, report, sources
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'server', 'nodes'))
print('COMFY:' + ','.join(bad))
"""


def test_dataset_modules_import_without_comfyui():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "COMFY:\n" in result.stdout, result.stdout
