"""The small interface between the training engine and a model implementation.

Two backbones implement it: ltx-core's official model (``trainer_core.ltxcore.backbone``, headless) and
ComfyUI's loaded ``LTXAVModel`` (``trainer_core.comfy.backbone``, imported lazily inside ComfyUI). Both name
modules identically (``transformer_blocks.N.attn1.to_q`` ...), so a LoRA trained on either has the same keys.

Tensor layouts are ComfyUI's, because that is what the cache stores:
- video latent ``[B, 128, F', H', W']`` (normalized, as ComfyUI's VAE returns it); tokens are ordered
  frame-major (f, h, w), so the first ``H'*W'`` tokens are latent frame 0;
- audio latent ``[B, 8, T_a, 16]``; one token per latent time step;
- IC-LoRA reference latent ``[B, 128, F_r, H'/N, W'/N]`` (``ModelInput.reference``), never in the output;
- text ``[1, T, D_video + D_audio]`` as ComfyUI's LTX-2.3 text encoder returns it (padding stripped, before the
  connectors). ``prepare_text`` runs the frozen connectors once, without autograd.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class TextContext:
    """Text conditioning after the connectors: what cross-attention sees."""

    video: torch.Tensor  # [B, L, D_video]
    audio: torch.Tensor | None  # [B, L, D_audio]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextContext:
        audio = None if self.audio is None else self.audio.to(device=device, dtype=dtype)
        return TextContext(self.video.to(device=device, dtype=dtype), audio)

    def repeat(self, batch: int) -> TextContext:
        audio = None if self.audio is None else self.audio.expand(batch, -1, -1)
        return TextContext(self.video.expand(batch, -1, -1), audio)


@dataclass(frozen=True)
class ModelInput:
    """One forward pass: noisy latents, per-token timesteps (sigma in [0, 1]), text and frame rate."""

    video: torch.Tensor  # [B, C, F', H', W']
    video_timesteps: torch.Tensor  # [B, F'*H'*W'], 0 for clean conditioning tokens
    video_sigma: torch.Tensor  # [B], the noise level of the generated tokens
    text: TextContext
    frame_rate: float
    audio: torch.Tensor | None = None  # [B, 8, T_a, 16]
    audio_timesteps: torch.Tensor | None = None  # [B, T_a]
    audio_sigma: torch.Tensor | None = None  # [B]
    # IC-LoRA: clean reference latents [B, C, F_r, H'/N, W'/N] beside the video tokens, at timestep 0. Their
    # positions come from their own latent grid with the spatial coordinates times N = ``reference_factor`` (as
    # ltx-trainer trains and ComfyUI's LTXV Add Guide samples); the velocity is returned for the video tokens only.
    reference: torch.Tensor | None = None
    reference_factor: int = 1
    # ltx-trainer's temporal factor S: the reference holds frames 0, 1, 1+S, 1+2S, ... of the clip
    # (F_r - 1 = (F' - 1) / S latent frames), so its times run at frame_rate / S, shifted back by (S - 1) frames so
    # its last frame ends with the clip's, clamped at 0 (ltx-core's VideoConditionByReferenceLatent).
    reference_temporal_factor: int = 1


class Backbone(Protocol):
    """What the engine needs from a model implementation."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the frozen weights compute in (autocast target)."""
        ...

    @property
    def has_audio(self) -> bool:
        """True when the model has the audio stream (LTX-2.x AV)."""
        ...

    def prepare_text(self, embeds: torch.Tensor) -> TextContext:
        """Run the frozen text connectors on one caption's encoder output, without autograd."""
        ...

    def velocity(self, inp: ModelInput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predicted velocity for the video (and audio) latents, same shapes as the inputs."""
        ...

    def lora_targets(self) -> dict[str, nn.Module]:
        """Every Linear-like module LoRA may target, by its canonical name (``transformer_blocks.0.attn1.to_q``)."""
        ...

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each transformer block in backward instead of storing its activations."""
        ...

    def set_compiled_blocks(self, enabled: bool, streamed: bool = False) -> bool:
        """Run each transformer block through ``torch.compile``; returns whether this backbone does.

        ``streamed``: also blocks whose weights are streamed from the host, not only fully resident ones."""
        ...

    def training_session(self) -> AbstractContextManager[None]:
        """Make the frozen model trainable through its LoRA for the duration of the block, then undo everything.

        On exit (normal, error or cancel) the model must compute bit-identical outputs to before.
        """
        ...


def linear_dims(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear-like module, including layers that do not subclass nn.Linear."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    weight = getattr(module, "weight", None)
    if weight is not None and weight.ndim == 2:
        return int(weight.shape[1]), int(weight.shape[0])
    raise TypeError(f"{type(module).__name__} is not a Linear-like layer (no in/out features or 2-D weight)")

