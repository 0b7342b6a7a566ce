"""The learning test: a LoRA trained on a trigger + pattern moves samples toward the pattern, and much less so
for a prompt without the trigger.

A tiny random model barely looks at its text (its cross-attention is untrained), so a LoRA trained only on
trigger clips shifts every prompt alike. As users do against bleed, the data also holds prior-preservation
clips: captions without the trigger whose latents the base model itself sampled. Deterministic (fixed seeds).
"""

from __future__ import annotations

import torch

from tests.engine_support import TEXT_DIM, config, tiny_backbone
from trainer_core.engine.data import InMemoryData, Sample
from trainer_core.engine.trainer import Trainer
from trainer_core.sampling import sample_video

SHAPE = (128, 2, 2, 2)


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

    clips = [Sample(f"trigger_{i}", pattern + 0.05 * torch.randn(SHAPE, generator=g), trigger, 24.0) for i in range(4)]
    for i in range(4):
        prior_text = torch.randn(1, 1024, TEXT_DIM, generator=g) - mean
        clips.append(Sample(f"prior_{i}", sample(prior_text, seed=500 + i), prior_text, 24.0))
    data = InMemoryData(clips, empty_text=torch.zeros(1, 1, TEXT_DIM))
    targets = "attn1.to_q, attn1.to_k, attn1.to_v, attn1.to_out.0, attn2.to_q, attn2.to_k, attn2.to_v, attn2.to_out.0"
    cfg = config(
        tmp_path,
        lora={"rank": 4, "alpha": 4, "targets": "custom", "custom_targets": targets},
        optimization={"steps": 80, "learning_rate": 3e-2, "scheduler": "constant"},
        checkpoints={"every": 1000},
    )
    trainer = Trainer(backbone, data, cfg)
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
