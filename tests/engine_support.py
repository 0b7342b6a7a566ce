"""Tiny models and synthetic cached data for engine tests (real LTX-2.3 architecture, random weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer_core.config import parse_section
from trainer_core.config.training import TrainConfig
from trainer_core.engine.data import InMemoryData, Sample
from trainer_core.ltx_core_backbone import LtxCoreBackbone
from trainer_core.tiny import write_tiny_checkpoint

TEXT_DIM = 64 + 32  # tiny video + audio cross-attention widths, as ComfyUI's LTX-2.3 encoder concatenates them


def tiny_backbone(path: Path, dtype=torch.float32, audio: bool = True) -> LtxCoreBackbone:
    if not path.exists():
        write_tiny_checkpoint(path, audio=audio, seed=0)
    return LtxCoreBackbone.from_checkpoint(path, dtype=dtype, device="cpu")


def synthetic_data(n: int = 3, seed: int = 0, audio: bool = True, frames: int = 2, size: int = 2) -> InMemoryData:
    g = torch.Generator().manual_seed(seed)
    samples = [
        Sample(
            key=f"clip_{i}",
            video=torch.randn(128, frames, size, size, generator=g),
            text=torch.randn(1, 5 + i, TEXT_DIM, generator=g),
            frame_rate=24.0,
            audio=torch.randn(8, 6, 16, generator=g) if audio else None,
            caption=f"caption {i}",
        )
        for i in range(n)
    ]
    return InMemoryData(samples, empty_text=torch.randn(1, 1, TEXT_DIM, generator=g), trigger="")


def config(tmp: Path, **overrides) -> TrainConfig:
    data = {
        "output_dir": str(tmp / "run"),
        "name": "t",
        "seed": 0,
        "lora": {"rank": 4, "alpha": 4},
        "optimization": {"steps": 6, "learning_rate": 1e-3},
        "checkpoints": {"every": 3},
        "memory": {"mixed_precision": "no", "gradient_checkpointing": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return parse_section(TrainConfig, data)
