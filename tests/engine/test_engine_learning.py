"""The learning test: a LoRA trained on a trigger + pattern moves samples toward the pattern, and much less so
for a prompt without the trigger.

A tiny random model barely looks at its text (its cross-attention is untrained), so a LoRA trained only on
trigger clips shifts every prompt alike. As users do against bleed, the data also holds prior-preservation
clips: captions without the trigger whose latents the base model itself sampled. Deterministic (fixed seeds).
"""

from __future__ import annotations

import torch

from tests.engine_support import CONCEPT_SHAPE as SHAPE
from tests.engine_support import TEXT_DIM, concept_config, concept_data, tiny_backbone
from trainer_core.engine.trainer import Trainer
from trainer_core.sampling import sample_video


def test_lora_learns_the_trigger_pattern_without_bleeding(tmp_path):
    backbone = tiny_backbone(tmp_path / "tiny.safetensors")
    g = torch.Generator().manual_seed(0)
    pattern = torch.randn(SHAPE, generator=g)
    mean = 3 * torch.randn(TEXT_DIM, generator=g)  # trigger captions and other captions differ in content
    trigger = torch.randn(1, 1024, TEXT_DIM, generator=g) + mean
    off_topic = torch.randn(1, 1024, TEXT_DIM, generator=g) - mean

    def sample(text: torch.Tensor, adapters=None, strength: float = 1.0, seed: int = 123) -> torch.Tensor:
        ctx = backbone.prepare_text(text)
        if adapters is None:
            return sample_video(backbone, ctx, SHAPE, 24.0, 8, torch.Generator().manual_seed(seed))[0]
        with adapters.attached(strength):
            return sample_video(backbone, ctx, SHAPE, 24.0, 8, torch.Generator().manual_seed(seed))[0]

    trainer = Trainer(backbone, concept_data(backbone, g, pattern, trigger, -mean), concept_config(tmp_path))
    trainer.train()

    def dist(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a - b) ** 2).mean())

    base_trigger, lora_trigger = sample(trigger), sample(trigger, trainer.adapters)
    base_off, lora_off = sample(off_topic), sample(off_topic, trainer.adapters)
    assert dist(lora_trigger, pattern) < 0.95 * dist(base_trigger, pattern)  # closer to the training latents
    effect, bleed = dist(lora_trigger, base_trigger), dist(lora_off, base_off)
    assert effect > 0.05
    assert bleed < 0.85 * effect, (effect, bleed)  # the off-topic prompt moves clearly less
    # Strength 0 is exactly the base model.
    assert torch.equal(sample(trigger, trainer.adapters, strength=0.0), base_trigger)
