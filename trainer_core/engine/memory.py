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

import math
import re
from pathlib import Path

import torch

from ..backbone import linear_dims
from ..config.training import TrainConfig
from ..errors import UserError
from ..gpu_memory import within_memory_fraction
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


def block_shape_of(backbone) -> tuple[int, int] | None:
    """(transformer blocks, video hidden width) of ``backbone``: its own figure when it states one (ComfyUI's does),
    else read off its LoRA targets (each block's video self-attention query); None when neither tells."""
    shape = getattr(backbone, "block_shape", None)
    if shape:
        return shape
    widths = {}
    for name, module in backbone.lora_targets().items():
        found = re.search(r"transformer_blocks\.(\d+)\.attn1\.to_q$", name)
        if found:
            widths[int(found[1])] = linear_dims(module)[0]
    return (len(widths), max(widths.values())) if widths else None


def free_device_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` once the allocator's unused cache is returned (None: not a CUDA device)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    torch.cuda.empty_cache()
    return within_memory_fraction(device, int(torch.cuda.mem_get_info(device)[0]))


def largest_fitting(
    free_bytes: int, data: TrainingData, batch_size: int, blocks: int, width: int, checkpointing: bool,
    pending_bytes: int = 0,
) -> str:
    """What the activation estimate (``training_memory_bytes``'s model) says fits into ``free_bytes``: the most
    frames at the largest sample's resolution, the largest resolution at its frames, and the largest batch.

    ``pending_bytes`` is LoRA state not allocated yet (the optimizer's moments before its first step). Audio and
    reference tokens are scaled with the video's, and resolutions are rounded down to the VAE's 32 px."""
    shape = max((data.shape_of(i) for i in range(len(data))), key=sample_tokens)
    _, frames, height, wide = shape[:4]
    per_token = blocks * width * 2 * ACTIVATION_VECTORS[checkpointing]
    fit_tokens = max(0.0, (free_bytes - HEADROOM - pending_bytes) / per_token)
    ratio = fit_tokens / (sample_tokens(shape) * batch_size)
    size = f"{wide * 32}x{height * 32}"
    head = f"estimate from the {free_bytes / 2**30:.1f} GiB free after the failed step (engine/memory.py, not a guarantee)"
    if ratio >= 1:
        return (f"{head}: the current {8 * (frames - 1) + 1} frames at {size}, batch {batch_size} should fit, so the "
                "shortfall is elsewhere (the weights, another program on the GPU)")
    options = []
    fit_frames = math.floor(frames * ratio)
    if fit_frames >= 1:
        options.append(f"at most about {8 * (fit_frames - 1) + 1} frames at {size}")
    scale = math.sqrt(ratio)
    if math.floor(wide * scale) >= 1 and math.floor(height * scale) >= 1:
        options.append(f"about {math.floor(wide * scale) * 32}x{math.floor(height * scale) * 32} at "
                       f"{8 * (frames - 1) + 1} frames")
    if batch_size > 1 and math.floor(ratio * batch_size) >= 1:
        options.append(f"batch_size {math.floor(ratio * batch_size)}")
    if not options:
        return f"{head}: not even one latent frame at {size} fits; lower the other settings first"
    return f"{head}: " + ", or ".join(options)


class TrainingOutOfMemory(UserError, RuntimeError):
    """The device ran out of memory during a training step; the message says what to lower."""


_ASKED = re.compile(r"Tried to allocate ([\d.]+ [KMGT]i?B)")


def out_of_memory_message(
    err: BaseException, step: int, last: Path | None, cfg: TrainConfig, fits: str | None = None
) -> str:
    """What ran out, which settings to lower (the README's out-of-memory ladder, cheapest first), what the estimate
    says fits (``fits``, from ``largest_fitting``; None when the free memory is unknown) and what is saved."""
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
        + (f". Largest that fits, {fits}" if fits else "")
    )
