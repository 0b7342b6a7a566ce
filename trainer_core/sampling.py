"""A small rectified-flow Euler sampler on any ``Backbone``, for headless previews, the demo sweep and tests.

Inside ComfyUI the pack samples with ComfyUI's own samplers instead; this exists so the CLI can judge a LoRA
without ComfyUI (``sample_av`` denoises an audio latent beside the video for audio runs). The schedule is the
token-count-shifted one LTX uses (the same shift rule as training: ``sigma(t) = e^mu / (e^mu + 1/t - 1)`` with
``mu`` from ``shift_for_tokens``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .backbone import Backbone, ModelInput, TextContext
from .cache.encoders import AUDIO_LATENT_BINS, AUDIO_LATENT_CHANNELS
from .engine.sigma import shift_for_tokens


def sigma_schedule(steps: int, tokens: int) -> torch.Tensor:
    """``steps + 1`` decreasing sigmas from 1 to 0."""
    mu = shift_for_tokens(tokens)
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    inner = torch.where(t > 0, 1.0 / t.clamp(min=1e-12) - 1.0, torch.full_like(t, math.inf))
    sigmas = math.exp(mu) / (math.exp(mu) + inner)
    return sigmas.float()


@dataclass(frozen=True)
class AudioPlan:
    """The audio stream of a joint sample: a latent ``[1, 8, steps, 16]``.

    With a ``condition`` (a clean normalized audio latent ``[8, T, 16]``, e.g. a training clip's) its first
    ``min(T, steps)`` steps are that latent, held clean at timestep 0 (as training feeds a conditioning stream), and
    only a tail the clip does not cover is generated, as ComfyUI's Concat AV Latent fits a shorter clip.
    """

    steps: int
    condition: torch.Tensor | None = None


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
    return sample_av(backbone, text, latent_shape, frame_rate, steps, generator, guidance, negative)[0]


@torch.no_grad()
def sample_av(
    backbone: Backbone,
    text: TextContext,
    latent_shape: tuple[int, int, int, int],
    frame_rate: float,
    steps: int,
    generator: torch.Generator,
    guidance: float = 1.0,
    negative: TextContext | None = None,
    audio: AudioPlan | None = None,
    reference: torch.Tensor | None = None,
    reference_factors: tuple[int, int] = (1, 1),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Video ``[1, C, F, H, W]`` and, with ``audio``, the audio latent ``[1, 8, T, 16]`` denoised together.

    The video noise is drawn first, so without ``audio`` this is ``sample_video``. Both streams follow one schedule
    (the video's token count), as ComfyUI samples a joint latent; conditioning audio steps keep timestep 0.
    
    With a ``reference`` ``[1, 128, F_r, H/N, W/N]`` (IC-LoRA) every step is guided by it, clean at timestep 0, with
    ``reference_factors`` (spatial N, temporal S) placing it as training did.
    """
    if guidance > 1 and negative is None:
        raise ValueError("guidance > 1 needs a negative text context")
    c, f, h, w = latent_shape
    device = backbone.device
    x = torch.randn(1, c, f, h, w, generator=generator).to(device)
    xa = generated = None
    if audio is not None:
        xa = torch.randn(1, AUDIO_LATENT_CHANNELS, audio.steps, AUDIO_LATENT_BINS, generator=generator).to(device)
        generated = torch.ones(audio.steps, device=device)
        if audio.condition is not None:
            kept = min(audio.steps, audio.condition.shape[1])
            xa[0, :, :kept] = audio.condition[:, :kept].to(device, xa.dtype)
            generated[:kept] = 0.0
    sigmas = sigma_schedule(steps, f * h * w)
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        sigma = torch.full((1,), s, device=device)
        inp = ModelInput(x, sigma.view(1, 1).expand(1, f * h * w), sigma, text, frame_rate)
        if reference is not None:  # IC-LoRA: the clean reference beside the video at timestep 0, as in training
            inp = replace(inp, reference=reference.to(device), reference_factor=reference_factors[0],
                          reference_temporal_factor=reference_factors[1])
        if xa is not None and generated is not None:
            # A stream that is all conditioning is at sigma 0, as training feeds it.
            audio_sigma = sigma if bool(generated.any()) else torch.zeros_like(sigma)
            inp = replace(inp, audio=xa, audio_timesteps=(s * generated)[None], audio_sigma=audio_sigma)
        velocity, audio_velocity = backbone.velocity(inp)
        if guidance > 1:
            uncond, audio_uncond = backbone.velocity(replace(inp, text=negative))
            velocity = uncond + guidance * (velocity - uncond)
            if audio_velocity is not None and audio_uncond is not None:
                audio_velocity = audio_uncond + guidance * (audio_velocity - audio_uncond)
        x = x + (s_next - s) * velocity.float()
        if xa is not None and generated is not None and audio_velocity is not None:
            xa = xa + (s_next - s) * audio_velocity.float() * generated.view(1, 1, -1, 1)
    return x, xa
