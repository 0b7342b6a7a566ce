"""What the engine trains on: frame-rate-aware batching and the empty caption that caption dropout needs."""

from __future__ import annotations

import pytest
import torch

from tests.engine_support import TEXT_DIM, config, synthetic_data, tiny_backbone, write_cache
from trainer_core.cache import CachedData
from trainer_core.comfy.training import direct_data
from trainer_core.config import ConfigError
from trainer_core.engine.data import InMemoryData, Sample, epoch_batches
from trainer_core.engine.trainer import Trainer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny") / "tiny_ltx23.safetensors"


def test_a_batch_holds_one_frame_rate():
    rates = [24.0, 30.0, 25.0] * 4
    samples = [Sample(f"c{i}", torch.zeros(128, 2, 2, 2), torch.zeros(1, 1, 8), fps) for i, fps in enumerate(rates)]
    data = InMemoryData(samples, empty_text=torch.zeros(1, 1, 8))
    for seed in range(4):
        for epoch in range(3):
            batches = epoch_batches(data, 4, seed, epoch)
            assert all(len({data.frame_rate_of(i) for i in b}) == 1 for b in batches)
            assert sorted(i for b in batches for i in b) == list(range(len(rates)))
            assert sorted(len(b) for b in batches) == [4, 4, 4]


def test_batches_never_mix_clips_with_and_without_a_reference_or_of_other_reference_shapes():
    video, text = torch.zeros(128, 2, 2, 2), torch.zeros(1, 1, 8)
    refs = [None, torch.zeros(128, 2, 1, 1), torch.zeros(128, 2, 2, 2)] * 4
    data = InMemoryData(
        [Sample(f"c{i}", video, text, 24.0, reference=r) for i, r in enumerate(refs)], empty_text=text,
        reference_downscale_factor=2,
    )
    assert data.reference_count() == 8 and data.reference_downscale_factor == 2
    assert synthetic_data(reference_factor=2)[0].reference.shape == (128, 2, 1, 1)
    assert synthetic_data().reference_count() == 0 and synthetic_data().reference_downscale_factor == 1
    for epoch in range(3):
        batches = epoch_batches(data, 4, 0, epoch)
        for b in batches:
            assert len({None if refs[i] is None else tuple(refs[i].shape) for i in b}) == 1
        assert sorted(len(b) for b in batches) == [4, 4, 4]


def test_cached_data_reads_frame_rates_and_the_empty_caption_from_the_manifest(tmp_path):
    data = CachedData(write_cache(tmp_path / "c", [24.0, 30.0]))
    assert [data.frame_rate_of(i) for i in range(2)] == [data[i].frame_rate for i in range(2)] == [24.0, 30.0]
    assert data.has_empty_text
    assert not CachedData(write_cache(tmp_path / "bare", [24.0], empty_text=False)).has_empty_text


def _direct_latents() -> InMemoryData:
    """What the Train node builds from a LATENT and a CONDITIONING wired straight in: no empty caption."""
    latent = {"samples": torch.zeros(2, 128, 2, 2, 2)}
    conditioning = [[torch.randn(1, 5, TEXT_DIM), {"frame_rate": 24.0}]]
    return direct_data(latent, conditioning)


@pytest.mark.parametrize("source", ["direct latents", "cache without the empty caption"])
def test_caption_dropout_without_an_empty_caption_is_refused_before_training(ckpt, tmp_path, source):
    data = _direct_latents() if source == "direct latents" else CachedData(write_cache(tmp_path / "c", [24.0], False))
    backbone = tiny_backbone(ckpt)
    with pytest.raises(ConfigError, match=r"recipe.caption_dropout is 0.1.*set recipe.caption_dropout to 0"):
        Trainer(backbone, data, config(tmp_path, recipe={"caption_dropout": 0.1}))
    assert not (tmp_path / "run").exists()
    Trainer(backbone, data, config(tmp_path, recipe={"caption_dropout": 0.0}))  # without dropout it trains


def test_caption_dropout_with_an_empty_caption_trains(ckpt, tmp_path):
    data = CachedData(write_cache(tmp_path / "c", [24.0, 24.0]))
    result = Trainer(tiny_backbone(ckpt), data, config(tmp_path, recipe={"caption_dropout": 0.5})).train()
    assert result.status == "completed"
    assert synthetic_data().has_empty_text
