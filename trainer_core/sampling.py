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


@dataclass
class _Stream:
    """One stream's latent ``[1, C, L, ...]`` while sampling; ``generated`` ``[L]`` is 1 where the sampler denoises
    and 0 where a conditioning latent is held clean at timestep 0 (None: all generated)."""

    x: torch.Tensor
    tokens_per_step: int  # model tokens per step along dim 2: H*W for a video frame, 1 for an audio step
    generated: torch.Tensor | None = None

    @classmethod
    def start(cls, noise: torch.Tensor, condition: torch.Tensor | None, tokens_per_step: int) -> _Stream:
        """``noise`` with ``condition`` ``[C, L_c, ...]`` over its first ``min(L, L_c)`` steps, held clean; the
        rest (a tail past a shorter clip) is generated, as ComfyUI's Concat AV Latent fits a shorter clip."""
        if condition is None:
            return cls(noise, tokens_per_step)
        if condition.shape[0] != noise.shape[1] or condition.shape[2:] != noise.shape[3:]:
            raise ValueError(f"a conditioning latent {tuple(condition.shape)} does not fit the sampled latent "
                             f"{tuple(noise.shape[1:])} (only its length may differ)")
        kept = min(noise.shape[2], condition.shape[1])
        x = noise.clone()
        x[0, :, :kept] = condition[:, :kept].to(x.device, x.dtype)
        generated = torch.ones(noise.shape[2], device=noise.device)
        generated[:kept] = 0.0
        return cls(x, tokens_per_step, generated)

    def timesteps(self, s: float) -> torch.Tensor:
        """Per-token timesteps ``[1, L * tokens_per_step]`` at sigma ``s`` (0 on held steps)."""
        if self.generated is None:
            return torch.full((1, self.x.shape[2] * self.tokens_per_step), s, device=self.x.device)
        return (s * self.generated).repeat_interleave(self.tokens_per_step)[None]

    def sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """The stream's sigma: a stream that is all conditioning is at sigma 0, as training feeds it."""
        return sigma if self.generated is None or bool(self.generated.any()) else torch.zeros_like(sigma)

    def step(self, velocity: torch.Tensor, ds: float) -> None:
        """One Euler step on the generated steps; held steps keep their clean latent exactly."""
        update = ds * velocity.float()
        if self.generated is not None:
            update = update * self.generated.view(1, 1, -1, *([1] * (self.x.ndim - 3)))
        self.x = self.x + update


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
    video: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Video ``[1, C, F, H, W]`` and, with ``audio``, the audio latent ``[1, 8, T, 16]`` denoised together.

    The video noise is drawn first, so without ``audio`` this is ``sample_video``. Both streams follow one schedule
    (the video's token count), as ComfyUI samples a joint latent; conditioning audio steps keep timestep 0.

    With a ``video`` condition (a clean video latent ``[C, F_c, H, W]``, e.g. a training clip's, for video-to-audio)
    the video is held at it the way ``AudioPlan`` holds audio: its first ``min(F, F_c)`` latent frames stay clean at
    timestep 0 (sigma 0 when that is all of them) and only a tail past a shorter clip is generated.

    With a ``reference`` ``[1, 128, F_r, H/N, W/N]`` (IC-LoRA) every step is guided by it, clean at timestep 0, with
    ``reference_factors`` (spatial N, temporal S) placing it as training did.
    """
    if guidance > 1 and negative is None:
        raise ValueError("guidance > 1 needs a negative text context")
    c, f, h, w = latent_shape
    device = backbone.device
    v = _Stream.start(torch.randn(1, c, f, h, w, generator=generator).to(device), video, h * w)
    a = None
    if audio is not None:
        noise = torch.randn(1, AUDIO_LATENT_CHANNELS, audio.steps, AUDIO_LATENT_BINS, generator=generator)
        a = _Stream.start(noise.to(device), audio.condition, 1)
    sigmas = sigma_schedule(steps, f * h * w)
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        sigma = torch.full((1,), s, device=device)
        inp = ModelInput(v.x, v.timesteps(s), v.sigma(sigma), text, frame_rate)
        if reference is not None:  # IC-LoRA: the clean reference beside the video at timestep 0, as in training
            inp = replace(inp, reference=reference.to(device), reference_factor=reference_factors[0],
                          reference_temporal_factor=reference_factors[1])
        if a is not None:
            inp = replace(inp, audio=a.x, audio_timesteps=a.timesteps(s), audio_sigma=a.sigma(sigma))
        velocity, audio_velocity = backbone.velocity(inp)
        if guidance > 1:
            uncond, audio_uncond = backbone.velocity(replace(inp, text=negative))
            velocity = uncond + guidance * (velocity - uncond)
            if audio_velocity is not None and audio_uncond is not None:
                audio_velocity = audio_uncond + guidance * (audio_velocity - audio_uncond)
        v.step(velocity, s_next - s)
        if a is not None and audio_velocity is not None:
            a.step(audio_velocity, s_next - s)
    return v.x, None if a is None else a.x
