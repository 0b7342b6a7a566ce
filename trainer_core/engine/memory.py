"""Device memory a training run needs beside the frozen weights: what ComfyUI must keep free when it loads them.

ComfyUI decides how much of the model stays on the GPU (the rest is streamed per layer) from the memory a job
says it needs. Training needs the LoRA state plus the activations, far more than ComfyUI's inference reserve;
too little and the first step runs out of memory on a small card, too much and more weights are streamed than
necessary (slower). Figures measured on the full-size model (docs/benchmarks.md): 44.5 GiB peak with 39.1 GiB
of weights at 3,621 tokens, rank 32 all_attention (213.9M LoRA parameters), checkpointing on.

The captions' text contexts (~12.6 MB each at full size) wait in host memory (``Trainer._text``); only one batch's
copy is on the device, which the headroom covers.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..config.training import TrainConfig
from ..errors import UserError
from .data import TrainingData

# fp32 master + fp32 grad + AdamW's two fp32 moments; bf16 working copies and their grads add 2 + 2.
LORA_BYTES_PER_PARAM = {"bf16": 20, "no": 16}
# Per token and per block, in units of one bf16 hidden vector: with checkpointing each block keeps its input
# (1) and one block at a time recomputes (the rest of the margin); without, every block keeps ~53 (measured:
# ~20 MiB per token at 48 blocks x 4096 wide).
ACTIVATION_VECTORS = {True: 1.5, False: 53.0}
HEADROOM = 1 << 30  # allocator fragmentation, cuBLAS/attention workspaces


def sample_tokens(shape: tuple[int, ...]) -> int:
    """Transformer tokens of one sample from ``TrainingData.shape_of``: video [C, F, H, W], then audio [C, T, M] and
    an IC-LoRA reference [C, F, H/N, W/N] when present (``data.batch_shape``: 4, 7, 8 or 11 numbers).

    A reference counts even in a run that does not use it (recipe.reference_p 0): a safe overestimate."""
    _, frames, height, width = shape[:4]
    audio = shape[5] if len(shape) in (7, 11) else 0
    reference = shape[-3] * shape[-2] * shape[-1] if len(shape) in (8, 11) else 0
    return frames * height * width + audio + reference


def training_memory_bytes(
    data: TrainingData, lora_parameters: int, batch_size: int, blocks: int, width: int, checkpointing: bool,
    mixed_precision: str,
) -> int:
    """Estimated bytes of LoRA state + activations + headroom for a run over ``data``'s largest sample."""
    tokens = max(sample_tokens(data.shape_of(i)) for i in range(len(data))) * batch_size
    activations = tokens * blocks * width * 2 * ACTIVATION_VECTORS[checkpointing]
    return int(lora_parameters * LORA_BYTES_PER_PARAM[mixed_precision] + activations + HEADROOM)


class TrainingOutOfMemory(UserError, RuntimeError):
    """The device ran out of memory during a training step; the message says what to lower."""


_ASKED = re.compile(r"Tried to allocate ([\d.]+ [KMGT]i?B)")


def out_of_memory_message(err: BaseException, step: int, last: Path | None, cfg: TrainConfig) -> str:
    """What ran out, which settings to lower (the README's out-of-memory ladder, cheapest first) and what is saved."""
    asked = _ASKED.search(str(err))
    ladder = [
        "memory.gradient_checkpointing: on" if not cfg.memory.gradient_checkpointing else None,
        f"optimization.batch_size: 1 with gradient_accumulation {cfg.optimization.batch_size}"
        if cfg.optimization.batch_size > 1 else None,
        "fewer frames or a smaller bucket (cache again)",
        "lora.rank: 16" if cfg.lora.rank > 16 else None,
        "optimization.optimizer: adamw8bit" if cfg.optimization.optimizer != "adamw8bit" else None,
        "an fp8 checkpoint",
    ]
    saved = f"the last checkpoint, {last}, is intact: resume from it" if last else "no checkpoint was written yet"
    return (
        f"the GPU ran out of memory in training step {step + 1} (it asked for "
        f"{asked.group(1) if asked else 'more than was free'}); training stopped and {saved}. Lower, cheapest first: "
        + "; ".join(s for s in ladder if s) + " (README: Speed and VRAM guide)"
    )
