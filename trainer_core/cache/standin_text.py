"""A deterministic STAND-IN text encoder for tests and the headless demo. It is not Gemma.

LTX-2.3's real text encoder is Gemma-3 12B plus the checkpoint's feature projection (ComfyUI loads it as
CLIP); it cannot run on a small machine. For the demo and the tests the cache needs *some* caption features
of the right width, so this class maps each word to a fixed pseudo-random vector (seeded by the word's hash)
plus a position signal. Same caption -> same features, different captions -> different features, and the
output has ComfyUI's layout ``[1, T, D]`` (T = words + 1 start token). A LoRA trained on these features
learns nothing transferable to real prompts: use ComfyUI's text encoder for real training.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import torch

STANDIN_FAMILY = "standin-hashed-words"
_TOKEN = re.compile(r"\w+|[^\w\s]")


def text_width_for(config: dict[str, Any]) -> int:
    """The text-feature width ComfyUI's LTX text encoder gives a checkpoint with this ``config`` header.

    LTX-2.3 (caption projection before the connectors): video + audio cross-attention width (4096 + 2048 =
    6144 for the 22B model). LTX-2: the caption channels (3840).
    """
    t = config["transformer"]
    if t.get("caption_proj_before_connector", False):
        return int(t["cross_attention_dim"]) + int(t.get("audio_cross_attention_dim", 0))
    return int(t["caption_channels"])


class StandinTextEncoder:
    """Hashed word embeddings of width ``width`` (implements ``trainer_core.cache.encoders.TextEncoder``)."""

    family = STANDIN_FAMILY

    def __init__(self, width: int, scale: float = 1.0) -> None:
        if width < 2:
            raise ValueError(f"width must be >= 2, got {width}")
        self.width, self.scale = width, scale

    def identity(self) -> str:
        return f"standin-v1-w{self.width}-s{self.scale:g}"

    def _word(self, word: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(word.lower().encode()).digest()[:8], "little") & (2**63 - 1)
        return torch.randn(self.width, generator=torch.Generator().manual_seed(seed))

    def encode(self, caption: str) -> torch.Tensor:
        """``[1, 1 + words, width]`` float32; the first row is a fixed start token (the empty caption is 1 row)."""
        words = ["<start>", *_TOKEN.findall(caption)]
        vectors = torch.stack([self._word(w) for w in words])
        pos = torch.arange(len(words), dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, self.width, 2, dtype=torch.float32) / self.width)
        signal = torch.zeros(len(words), self.width)
        signal[:, 0::2] = torch.sin(pos * freq)
        signal[:, 1::2] = torch.cos(pos * freq)[:, : self.width // 2]
        return (self.scale * (vectors + 0.5 * signal)).unsqueeze(0)
