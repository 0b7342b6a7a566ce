"""On a CUDA machine only: a real CUDA out-of-memory error in a training step (the CPU tests fake it,
tests/reliability/test_oom_estimate.py). After two steps and a checkpoint, the rest of the card is taken, either by
another tensor (as another program would) or by a per-process memory fraction (how a smaller card is emulated);
the next step fails in the allocator. The run stops with the message naming the
step, what was asked for and the estimate of what fits, and the checkpoint written before stays loadable.

Run alone: python3 -m pytest -q tests/gpu -m cuda
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.engine_support import config, synthetic_data
from trainer_core.engine.memory import TrainingOutOfMemory
from trainer_core.engine.trainer import Callbacks, Trainer
from trainer_core.ltxcore.backbone import LtxCoreBackbone
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("taken_by", ["tensor", "fraction"])
def test_a_real_out_of_memory_stops_with_the_estimate_and_keeps_the_checkpoint(tmp_path, taken_by):
    path = write_tiny_checkpoint(tmp_path / "tiny.safetensors", seed=0)
    backbone = LtxCoreBackbone.from_checkpoint(path, dtype=torch.float32, device="cuda")
    data = synthetic_data(n=2, audio=False, frames=8, size=32)  # 8192 tokens a clip: tens of MiB of activations
    cfg = config(tmp_path, optimization={"steps": 6}, checkpoints={"every": 2})
    hog: list[torch.Tensor] = []

    def take_the_card(info) -> None:
        if info.step == 2:  # the step-2 checkpoint is written after this call returns, before step 3 runs
            torch.cuda.empty_cache()
            if taken_by == "tensor":
                hog.append(torch.empty(torch.cuda.mem_get_info()[0] - 8 * 2**20, dtype=torch.uint8, device="cuda"))
            else:
                total = torch.cuda.get_device_properties(0).total_memory
                torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + 8 * 2**20) / total)

    trainer = Trainer(backbone, data, cfg)
    try:
        with pytest.raises(TrainingOutOfMemory) as info:
            trainer.train(Callbacks(on_step=take_the_card))
    finally:
        hog.clear()
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    message = str(info.value)
    print(message)
    assert message.startswith("the GPU ran out of memory in training step 3 (it asked for ")
    assert "more than was free" not in message  # the allocator's figure was read
    free_gib = float(message.split("estimate from the ")[1].split(" GiB free")[0])
    assert free_gib < 1.0  # what was left, not the card's whole free memory (the fraction is a cap the driver ignores)
    checkpoint = trainer.writer.written[-1]
    assert f"the last checkpoint, {checkpoint}, is intact" in message
    tensors = load_file(str(checkpoint))
    assert tensors and all(torch.isfinite(t).all() for t in tensors.values())
    states = list((tmp_path / "run").rglob("*state*.json"))
    assert states and any(json.loads(s.read_text()).get("step") == 2 for s in states)
