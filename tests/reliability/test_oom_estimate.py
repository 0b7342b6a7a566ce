"""Out of memory in a training step: besides the ladder of settings to lower, the message states the largest frames,
resolution and batch that the memory estimate (engine/memory.py) says fit into the device memory free after the
failed step, as an estimate. CPU only: the out-of-memory error and the free memory are faked."""

from __future__ import annotations

import pytest
import torch

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.engine import trainer as trainer_module
from trainer_core.engine.data import InMemoryData, Sample
from trainer_core.engine.memory import (
    ACTIVATION_VECTORS,
    HEADROOM,
    TrainingOutOfMemory,
    block_shape_of,
    largest_fitting,
)
from trainer_core.engine.trainer import Trainer
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

GIB = 2**30


def _clip(frames: int, height: int, width: int) -> InMemoryData:
    """One clip of these latent sizes (768x448, 49 frames is 7 x 14 x 24)."""
    sample = Sample(key="c", video=torch.zeros(128, frames, height, width), text=torch.zeros(1, 3, 8), frame_rate=24.0)
    return InMemoryData([sample], empty_text=torch.zeros(1, 1, 8), trigger="")


def test_the_estimate_at_full_size():
    # LTX-2.3: 48 blocks of width 4096, checkpointing on; 49 frames at 768x448 (7 x 14 x 24 = 2352 tokens).
    data, per_token = _clip(7, 14, 24), 48 * 4096 * 2 * ACTIVATION_VECTORS[True]
    half = HEADROOM + int(0.5 * 2352 * per_token)  # room for half the tokens of the current clip
    assert largest_fitting(half, data, 1, 48, 4096, True) == (
        f"estimate from the {half / GIB:.1f} GiB free after the failed step (engine/memory.py, not a guarantee): at "
        "most about 17 frames at 768x448, or about 512x288 at 49 frames")  # 3 latent frames; 24 x 0.707 -> 16 x 32
    # a batch of 4 with room for two of its clips: the batch is named too
    assert largest_fitting(half + int(1.5 * 2352 * per_token), data, 4, 48, 4096, True).endswith(", or batch_size 2")
    # the optimizer's moments still to come are taken off first: 3/4 of the clip's tokens fit, 1/2 after them
    three_quarters = HEADROOM + int(0.75 * 2352 * per_token)
    assert "at most about 33 frames" in largest_fitting(three_quarters, data, 1, 48, 4096, True)
    assert "at most about 17 frames" in largest_fitting(three_quarters, data, 1, 48, 4096, True,
                                                        pending_bytes=int(0.25 * 2352 * per_token))
    assert "should fit, so the shortfall is elsewhere" in largest_fitting(100 * GIB, data, 1, 48, 4096, True)
    assert largest_fitting(GIB // 2, data, 1, 48, 4096, True).endswith(
        "not even one latent frame at 768x448 fits; lower the other settings first")


def test_the_out_of_memory_message_names_what_fits(tmp_path, monkeypatch):
    backbone = tiny_backbone(write_tiny_checkpoint(tmp_path / "tiny.safetensors"))
    assert block_shape_of(backbone) == (2, 64)  # read off the LoRA targets (ComfyUI's backbone states its own)
    real, calls = backbone.velocity, []

    def velocity(inp):
        calls.append(1)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        return real(inp)

    monkeypatch.setattr(backbone, "velocity", velocity)
    data = synthetic_data(n=2, audio=False, frames=4, size=4)  # 64 tokens a clip, a batch of 2: 128
    per_token = 2 * 64 * 2 * ACTIVATION_VECTORS[False]
    free = HEADROOM + int(0.5 * 128 * per_token)
    monkeypatch.setattr(trainer_module, "free_device_memory", lambda device: free)
    cfg = config(tmp_path, optimization={"steps": 4, "batch_size": 2}, checkpoints={"every": 4})
    with pytest.raises(TrainingOutOfMemory) as info:
        Trainer(backbone, data, cfg).train()
    message = str(info.value)
    assert message.startswith("the GPU ran out of memory in training step 2 (it asked for 2.00 GiB)")
    assert "memory.gradient_checkpointing: on" in message  # the ladder stays
    assert message.endswith(
        f". Largest that fits, estimate from the {free / GIB:.1f} GiB free after the failed step (engine/memory.py, "
        "not a guarantee): at most about 9 frames at 128x128, or about 64x64 at 25 frames, or batch_size 1")


def test_without_a_measure_of_free_memory_the_message_keeps_the_ladder_only(tmp_path, monkeypatch):
    backbone = tiny_backbone(write_tiny_checkpoint(tmp_path / "tiny.safetensors"))

    def velocity(inp):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(backbone, "velocity", velocity)
    with pytest.raises(TrainingOutOfMemory) as info:  # a CPU device: free memory unknown
        Trainer(backbone, synthetic_data(), config(tmp_path)).train()
    assert "Largest that fits" not in str(info.value) and str(info.value).endswith("(README: Speed and VRAM guide)")
