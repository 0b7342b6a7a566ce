"""A small rectified-flow Euler sampler on any ``Backbone``, for headless previews, the demo sweep and tests.

Inside ComfyUI the pack samples with ComfyUI's own samplers instead; this exists so the CLI can judge a LoRA
without ComfyUI. The schedule is the token-count-shifted one LTX uses (the same shift rule as training:
``sigma(t) = e^mu / (e^mu + 1/t - 1)`` with ``mu`` from ``shift_for_tokens``).
"""

from __future__ import annotations

import math

import torch

from .backbone import Backbone, ModelInput, TextContext
from .engine.sigma import shift_for_tokens


def sigma_schedule(steps: int, tokens: int) -> torch.Tensor:
    """``steps + 1`` decreasing sigmas from 1 to 0."""
    mu = shift_for_tokens(tokens)
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    inner = torch.where(t > 0, 1.0 / t.clamp(min=1e-12) - 1.0, torch.full_like(t, math.inf))
    sigmas = math.exp(mu) / (math.exp(mu) + inner)
    return sigmas.float()


@torch.no_grad()
def sample_video(
    backbone: Backbone,
    text: TextContext,
    latent_shape: tuple[int, int, int, int],
    frame_rate: float,
    steps: int,
    generator: torch.Generator,
    guidance: float = 1.0,
    negative: TextContext | None = None,
) -> torch.Tensor:
    """Denoise ``[1, C, F, H, W]`` from pure noise with Euler steps on the predicted velocity (video only).

    With ``guidance`` > 1 and a ``negative`` context the velocity is ``neg + guidance * (pos - neg)`` (CFG).
    """
    if guidance > 1 and negative is None:
        raise ValueError("guidance > 1 needs a negative text context")
    c, f, h, w = latent_shape
    x = torch.randn(1, c, f, h, w, generator=generator).to(backbone.device)
    sigmas = sigma_schedule(steps, f * h * w)
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        sigma = torch.full((1,), s, device=backbone.device)
        inp = ModelInput(x, sigma.view(1, 1).expand(1, f * h * w), sigma, text, frame_rate)
        velocity, _ = backbone.velocity(inp)
        if guidance > 1:
            uncond, _ = backbone.velocity(ModelInput(x, inp.video_timesteps, sigma, negative, frame_rate))
            velocity = uncond + guidance * (velocity - uncond)
        x = x + (s_next - s) * velocity.float()
    return x
