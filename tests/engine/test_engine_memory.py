"""The memory the Train node asks ComfyUI to keep free beside the weights (``engine.memory``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from tests.engine_support import synthetic_data
from trainer_core.engine.data import InMemoryData, Sample, batch_shape
from trainer_core.engine.memory import sample_tokens, training_memory_bytes

GIB = 2**30
FULL_LORA = 213_910_016  # rank 32, all_attention on the 22B model


def _data(shapes: list[tuple[tuple[int, ...], int]]) -> InMemoryData:
    samples = [
        Sample(key=f"s{i}", video=torch.zeros(video), text=torch.zeros(1, 1, 8), frame_rate=25.0,
               audio=torch.zeros(8, audio, 16) if audio else None)
        for i, (video, audio) in enumerate(shapes)
    ]
    return InMemoryData(samples, empty_text=torch.zeros(1, 0, 8), trigger="")


def test_tokens_count_video_and_audio():
    assert sample_tokens((128, 7, 17, 30, 8, 51, 16)) == 3570 + 51
    assert sample_tokens((128, 7, 17, 30)) == 3570


def test_tokens_count_an_ic_lora_reference():
    video, audio, reference = (128, 7, 16, 32), (8, 51, 16), (128, 7, 8, 16)
    assert sample_tokens(batch_shape(video, None, reference)) == 7 * 16 * 32 + 7 * 8 * 16
    assert sample_tokens(batch_shape(video, audio, reference)) == 7 * 16 * 32 + 51 + 7 * 8 * 16


def test_estimate_brackets_the_measured_full_size_run():
    # H100, 960x544x49 AV, rank 32, checkpointing, bf16: 5.4 GiB allocated and 8.1 GiB reserved beyond the
    # 39.1 GiB of weights (docs/benchmarks.md). ComfyUI must leave at least the allocated part free.
    data = _data([((128, 7, 17, 30), 51)])
    need = training_memory_bytes(data, FULL_LORA, 1, 48, 4096, True, "bf16")
    assert 5.4 * GIB < need < 8.1 * GIB


def test_estimate_follows_the_largest_sample_batch_and_checkpointing():
    small, large = ((128, 2, 8, 8), 0), ((128, 4, 8, 8), 0)
    base = training_memory_bytes(_data([small]), 1000, 1, 4, 64, True, "bf16")
    assert training_memory_bytes(_data([small, large]), 1000, 1, 4, 64, True, "bf16") > base
    assert training_memory_bytes(_data([small]), 1000, 2, 4, 64, True, "bf16") > base
    assert training_memory_bytes(_data([small]), 1000, 1, 4, 64, False, "bf16") > 10 * (base - GIB) + GIB
    assert training_memory_bytes(_data([small]), 1000, 1, 4, 64, True, "no") < base


def test_train_node_reserves_the_estimate(comfy, monkeypatch):
    import comfy.model_management as mm

    from tests.comfy_models import load_comfy
    from trainer_core.comfy.training import train_on_model
    from trainer_core.config.training import TrainConfig
    from trainer_core.ltxcore.tiny import write_tiny_checkpoint

    asked: list[int] = []
    real = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, memory_required=0, **kw: (
        asked.append(memory_required), real(models, memory_required=memory_required, **kw))[1])
    with tempfile.TemporaryDirectory() as tmp:
        model = load_comfy(write_tiny_checkpoint(Path(tmp) / "tiny.safetensors", audio=True, seed=0))
        cfg = TrainConfig.model_validate({"output_dir": tmp, "name": "mem", "optimization": {"steps": 1},
                                          "lora": {"rank": 4, "alpha": 4}})
        train_on_model(model, synthetic_data(n=1), cfg)
    assert asked and min(asked) > GIB  # far above ComfyUI's default (0: its inference reserve only)
