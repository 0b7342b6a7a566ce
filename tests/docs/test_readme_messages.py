"""Every message the README quotes is one the code prints.

Convention: the README quotes a message the user will see as **"bold, in double quotes"** (line breaks inside a
quote count as spaces), and nothing else is written that way. Each quote here has a trigger that puts the code
into the situation the README describes and returns what the user then sees; the quote must appear in it. A quote
without a trigger fails, so a new one gets a test with it.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.dataset_media import write_video
from trainer_core.cli import main
from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset import load_dataset, report_text

REPO = Path(__file__).resolve().parents[2]
QUOTE = re.compile(r'\*\*"(.+?)"\*\*', re.DOTALL)


def readme_quotes() -> list[str]:
    return [" ".join(q.split()) for q in QUOTE.findall((REPO / "README.md").read_text(encoding="utf-8"))]


def dataset_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> str:
    """Troubleshooting: a 30-frame clip (trimmed) and a 5-frame one (excluded), as ``trainer_core dataset`` shows."""
    write_video(tmp_path / "clip_07.mp4", frames=30)
    write_video(tmp_path / "clip_08.mp4", frames=5)
    (tmp_path / "clip_07.txt").write_text("a cat walks", encoding="utf-8")
    (tmp_path / "clip_08.txt").write_text("a dog sits", encoding="utf-8")
    return report_text(load_dataset(DatasetConfig(path=str(tmp_path), buckets="64x64x25")))


def config_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> str:
    """Headless CLI, 'Training config (YAML)': the README's example config with a negative rank."""
    cfg = tmp_path / "my_lora.yaml"
    cfg.write_text(
        "name: my_lora\noutput_dir: runs/my_lora\ndata: cache/my_dataset\n"
        "model: {checkpoint: models/ltx-2.3-22b-dev.safetensors, dtype: bfloat16, device: cuda}\n"
        "lora: {rank: -3, alpha: 32, targets: all_attention}\n",
        encoding="utf-8",
    )
    assert main(["train", str(cfg)]) == 2
    return capsys.readouterr().err


TRIGGERS: dict[str, Callable[[Path, pytest.CaptureFixture], str]] = {
    "trimmed 30 -> 25 frames (8n+1)": dataset_report,
    "is shorter than the shortest video bucket": dataset_report,
    "my_lora.yaml: lora.rank = -3: Input should be greater than or equal to 1": config_error,
}
LORA_KEY_NOT_LOADED = "lora key not loaded"  # printed by ComfyUI itself: test_comfyui_lora_key_not_loaded


def test_the_convention_finds_the_quotes():
    quotes = readme_quotes()
    assert len(quotes) == len(set(quotes)) >= 4
    assert LORA_KEY_NOT_LOADED in quotes


def test_every_quote_has_a_trigger():
    assert set(readme_quotes()) == set(TRIGGERS) | {LORA_KEY_NOT_LOADED}


@pytest.mark.parametrize("quote", sorted(TRIGGERS))
def test_quote_is_printed(quote, tmp_path, capsys):
    seen = TRIGGERS[quote](tmp_path, capsys)
    assert quote in " ".join(seen.split()), seen


def test_comfyui_lora_key_not_loaded(comfy, caplog):
    """Troubleshooting: a file in another tool's key layout, loaded by ComfyUI's own LoRA loader."""
    comfy_lora = importlib.import_module("comfy.lora")
    foreign = {"lora_unet_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 8)}
    with caplog.at_level(logging.WARNING):
        patches = comfy_lora.load_lora(foreign, {})  # no key of this layout maps onto the model
    assert patches == {}
    assert any(LORA_KEY_NOT_LOADED in r.getMessage() for r in caplog.records), caplog.text
