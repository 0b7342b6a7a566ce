"""The captions' text contexts: the connectors run once per caption, the results wait in host memory."""

from __future__ import annotations

import pytest
import torch

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.backbone import TextContext
from trainer_core.engine.trainer import Trainer
from trainer_core.ltxcore.backbone import LtxCoreBackbone


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny") / "tiny_ltx23.safetensors"


def test_connectors_run_once_per_caption_across_epochs(ckpt, tmp_path):
    backbone = tiny_backbone(ckpt)
    prepare, calls = backbone.prepare_text, []
    backbone.prepare_text = lambda embeds: (calls.append(embeds.shape), prepare(embeds))[1]
    cfg = config(tmp_path, optimization={"steps": 12}, recipe={"caption_dropout": 0.3})
    trainer = Trainer(backbone, synthetic_data(n=3), cfg)
    trainer.train()  # 4 epochs of 3 clips
    assert sorted(trainer._texts) == ["", "clip_0", "clip_1", "clip_2"]  # the empty caption was drawn too
    assert len(calls) == 4


def test_contexts_wait_on_the_host_and_go_to_the_device_per_batch(ckpt, tmp_path, monkeypatch):
    """A device other than the CPU, simulated with 'meta': the cache must stay on the CPU, each use on the device."""
    backbone = tiny_backbone(ckpt)
    trainer = Trainer(backbone, synthetic_data(), config(tmp_path))
    monkeypatch.setattr(backbone, "prepare_text", lambda embeds: TextContext(torch.ones(1, 4, 8), torch.ones(1, 4, 6)))
    monkeypatch.setattr(LtxCoreBackbone, "device", property(lambda self: torch.device("meta")))
    for _ in range(2):
        ctx = trainer._text("clip_0", torch.zeros(1, 3, 8))
        assert ctx.video.device.type == ctx.audio.device.type == "meta"
    cached = trainer._texts["clip_0"]
    assert cached.video.device.type == cached.audio.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_cache_is_pinned_host_memory(ckpt, tmp_path):
    tiny_backbone(ckpt)  # writes the checkpoint
    backbone = LtxCoreBackbone.from_checkpoint(ckpt, dtype=torch.float32, device="cuda")
    trainer = Trainer(backbone, synthetic_data(), config(tmp_path, optimization={"steps": 3}))
    assert trainer.train().status == "completed"
    for ctx in trainer._texts.values():
        assert ctx.video.device.type == "cpu" and ctx.video.is_pinned() and ctx.audio.is_pinned()
