"""Headless previews of an IC-LoRA run are guided by a training clip's reference, as the Train node's are: every
sampling step of the preview gets the reference tokens, clean at timestep 0, at the run's factors."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from tests.engine.test_engine_iclora import _add_references
from tests.engine_support import TEXT_DIM, tiny_backbone, write_cache
from trainer_core.cli import main
from trainer_core.config.training import PreviewSettings
from trainer_core.ltxcore.backbone import LtxCoreBackbone
from trainer_core.ltxcore.previews import PromptFeatures, render_clip

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) is the headless backbone")


class _Frames:
    """A stand-in decoder: the latent's first channels as frames (the test compares latents, not pictures)."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent[:3].permute(1, 2, 3, 0).float()


def test_a_preview_with_a_reference_is_guided_by_it_at_timestep_0(tmp_path):
    backbone = tiny_backbone(tmp_path / "tiny.safetensors")
    settings = PreviewSettings(every=1, width=128, height=128, frames=9, steps=2)
    features = torch.randn(1, 5, TEXT_DIM, generator=torch.Generator().manual_seed(1))
    reference = torch.randn(128, 2, 2, 2, generator=torch.Generator().manual_seed(2))  # 128x128 / 2
    seen = []
    hook = backbone.transformer.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["video"].timesteps[0].clone()), with_kwargs=True
    )
    try:
        guided, _ = render_clip(backbone, _Frames(), PromptFeatures("p", features, reference=reference), settings,
                                5, 24.0, reference_factors=(2, 1))
        plain, _ = render_clip(backbone, _Frames(), PromptFeatures("p", features), settings, 5, 24.0)
        other, _ = render_clip(backbone, _Frames(), PromptFeatures("p", features, reference=-reference), settings,
                               5, 24.0, reference_factors=(2, 1))
    finally:
        hook.remove()
    ref_tokens, tokens = 2 * 2 * 2, 2 * 4 * 4
    assert [t.numel() for t in seen] == [ref_tokens + tokens] * 2 + [tokens] * 2 + [ref_tokens + tokens] * 2
    assert all(not t[:ref_tokens].any() and t[ref_tokens:].all() for t in seen[:2])  # clean reference, noisy clip
    assert not torch.allclose(guided, plain) and not torch.allclose(guided, other)


def test_headless_ic_lora_previews_sample_with_the_training_reference(tmp_path, caplog, monkeypatch):
    ckpt = tmp_path / "tiny.safetensors"
    tiny_backbone(ckpt)
    cache = write_cache(tmp_path / "cache", [24.0, 24.0])
    _add_references(cache, 1)
    calls = []
    velocity = LtxCoreBackbone.velocity

    def spy(self, inp):
        if not torch.is_grad_enabled():  # the preview sampler (training steps run with autograd)
            calls.append(inp)
        return velocity(self, inp)

    monkeypatch.setattr(LtxCoreBackbone, "velocity", spy)
    cfg = {
        "name": "ic", "seed": 0, "output_dir": str(tmp_path / "run"), "data": str(cache),
        "model": {"checkpoint": str(ckpt), "device": "cpu", "dtype": "float32"},
        "lora": {"rank": 4, "alpha": 4}, "optimization": {"steps": 2}, "checkpoints": {"every": 2},
        "recipe": {"preset": "ic_lora"}, "memory": {"mixed_precision": "no", "gradient_checkpointing": False},
        "preview": {"every": 2, "width": 64, "height": 64, "frames": 9, "steps": 2},
    }  # fmt: skip
    path = tmp_path / "ic.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.INFO):
        assert main(["train", str(path)]) == 0
    assert "previews are guided by the training clips' references (reference_downscale_factor 1)" in caplog.text
    assert (tmp_path / "run" / "previews" / "ic_step_00002.mp4").is_file()
    assert len(calls) == 2 and all(c.reference is not None and c.reference.shape == (1, 128, 2, 2, 2) for c in calls)
