"""What the cache needs from a VAE and a text encoder, independent of where they come from.

ComfyUI's loaded VAE / CLIP (``trainer_core.comfy.cache_encoders``), ltx-core's VAE loaded from a checkpoint
(``trainer_core.ltxcore.encoders``) and the demo's stand-in text encoder (``standin_text``) all follow
these protocols, so the cache code never imports ComfyUI. ``identity()`` is a short string derived from the
model's weights: a different model gives a different identity, which invalidates what it encoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

import torch

from ..errors import UserError

LATENT_CHANNELS = 128  # LTX-2.x video latents
SPATIAL_FACTOR = 32
TEMPORAL_FACTOR = 8
VIDEO_FAMILY = "ltx-2.x-video-vae"
TEXT_FAMILY_LTX23 = "ltx-2.3-gemma"  # [1, T, 6144]: 4096 video + 2048 audio features
TEXT_FAMILY_LTX2 = "ltx-2-gemma"  # [1, T, 3840]
AUDIO_FAMILY = "ltx-2.x-audio-vae"
AUDIO_SAMPLE_RATE = 16000  # what LTX-2.x's audio VAE takes: stereo waveforms at 16 kHz
AUDIO_LATENT_CHANNELS = 8
AUDIO_LATENT_BINS = 16
AUDIO_LATENTS_PER_SECOND = 25  # 16000 Hz / hop 160 / temporal factor 4


class CacheError(UserError, ValueError):
    """The cache cannot be built or read; the message names the file or model and what to do."""


class VideoEncoder(Protocol):
    """Frames ``[F, H, W, 3]`` float 0..1 -> normalized latent ``[128, F', H/32, W/32]``."""

    family: str  # e.g. "ltx-2.x-video-vae"

    def identity(self) -> str: ...

    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...


class VideoDecoder(Protocol):
    """Normalized latent ``[128, F', H', W']`` -> frames ``[F, H, W, 3]`` float 0..1 (for previews)."""

    def identity(self) -> str: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


class TextEncoder(Protocol):
    """Caption -> features ``[1, T, D]`` exactly as ComfyUI's LTX-2.3 text encoder returns them."""

    family: str  # e.g. "ltx-2.3-gemma"
    width: int  # D: 6144 (4096 video + 2048 audio) for LTX-2.3

    def identity(self) -> str: ...

    def encode(self, caption: str) -> torch.Tensor: ...


class AudioEncoder(Protocol):
    """Waveform float32 ``[2, samples]`` at 16 kHz -> normalized audio latent ``[8, T, 16]``, T = ``audio_frames``.

    The latent equals the first T frames of what ComfyUI's audio VAE (and ltx-core's audio encoder) give for the
    same 16 kHz waveform (see ``fit_audio_latent``). ``identity()`` changes when the audio VAE's encoder weights
    or latent statistics change.
    """

    family: str  # "ltx-2.x-audio-vae"

    def identity(self) -> str: ...

    def encode(self, waveform: torch.Tensor) -> torch.Tensor: ...


class AudioDecoder(Protocol):
    """Normalized audio latent ``[8, T, 16]`` -> waveform float32 ``[2, samples]`` at ``sample_rate`` (previews)."""

    sample_rate: int

    def identity(self) -> str: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


def audio_frames(samples: int, sample_rate: int = AUDIO_SAMPLE_RATE) -> int:
    """Audio latent length T for ``samples`` at ``sample_rate``: ``round(seconds * 25)`` as ComfyUI computes it."""
    return round(samples / sample_rate * AUDIO_LATENTS_PER_SECOND)


def audio_latent_shape(samples: int, sample_rate: int = AUDIO_SAMPLE_RATE) -> tuple[int, int, int]:
    """The latent shape ``[8, T, 16]`` LTX-2.x's audio VAE gives a waveform of ``samples`` samples."""
    return (AUDIO_LATENT_CHANNELS, audio_frames(samples, sample_rate), AUDIO_LATENT_BINS)


def fit_audio_latent(latent: torch.Tensor, samples: int, where: str) -> torch.Tensor:
    """The audio VAE's output ``[8, T', 16]`` cut to ``T = audio_frames(samples)``, or ``CacheError`` if it is wrong.

    LTX-2.x's causal encoder gives ``(samples // 160) // 4 + 1`` frames (26 for one second), one or two more than
    the ``round(seconds * 25)`` that the model is run with (ltx-core's ``AudioLatentShape.from_duration``,
    ComfyUI's LTXVEmptyLatentAudio). ComfyUI's LTXVConcatAVLatent keeps the first T frames of a longer audio
    latent; the cache does the same, so a cached latent already has the shape the video's duration implies.
    """
    want = audio_latent_shape(samples)
    if latent.ndim != 3 or latent.shape[0] != want[0] or latent.shape[2] != want[2] or latent.shape[1] < want[1]:
        raise CacheError(
            f"{where}: the audio VAE returned a latent of shape {tuple(latent.shape)} for {samples} samples at "
            f"16 kHz; LTX-2.x's audio VAE gives at least {want}. Is the audio VAE input LTX-2.x's?"
        )
    latent = latent[:, : want[1]].contiguous()
    check_audio_latent(latent, samples, where)  # finite values
    return latent


def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The latent shape LTX-2.x's VAE gives ``frames`` x ``height`` x ``width`` pixels (8n+1, multiples of 32)."""
    return (LATENT_CHANNELS, (frames - 1) // TEMPORAL_FACTOR + 1, height // SPATIAL_FACTOR, width // SPATIAL_FACTOR)


def _check_encoded(
    latent: torch.Tensor, want: tuple[int, ...], where: str, encoder: str, given: str, hint: str, nan_hint: str = ""
) -> None:
    """Raise ``CacheError`` unless what ``encoder`` made of ``given`` has the shape ``want`` and finite values."""
    if tuple(latent.shape) != want:
        raise CacheError(
            f"{where}: the {encoder} returned a latent of shape {tuple(latent.shape)} for {given}; LTX-2.x's "
            f"{encoder} gives {want}. {hint}"
        )
    if not torch.isfinite(latent).all():
        raise CacheError(f"{where}: the {encoder} returned non-finite values (NaN/inf){nan_hint}")


def check_latent(latent: torch.Tensor, frames: torch.Tensor, where: str) -> None:
    """Raise ``CacheError`` unless ``latent`` has the shape the VAE must give for ``frames`` ``[F, H, W, 3]``."""
    _check_encoded(
        latent, latent_shape(*frames.shape[:3]), where, "video VAE", f"frames {tuple(frames.shape)}",
        "Is the VAE input LTX-2.3's video VAE?", "; try the float32 VAE or tiling off",
    )


def check_audio_latent(latent: torch.Tensor, samples: int, where: str) -> None:
    """Raise ``CacheError`` unless ``latent`` is the ``[8, T, 16]`` an LTX-2.x audio VAE gives ``samples``."""
    _check_encoded(
        latent, audio_latent_shape(samples), where, "audio VAE", f"{samples} samples at 16 kHz",
        "Is the audio VAE input LTX-2.3's (Load LTXV Audio VAE)?",
    )


def weights_identity(tensors: Iterable[tuple[str, torch.Tensor]], samples: int = 4096) -> str:
    """A short hash of a model's weights: every name and shape plus ``samples`` strided values of each.

    Values are rounded to bfloat16 and dtypes are left out, so the same checkpoint loaded in fp32 or bf16 (or
    by ComfyUI and by ltx-core) has one identity. Reading a strided sample rather than every byte keeps this
    fast for multi-GB models; two checkpoints that differ in a tensor almost surely differ in its samples.
    """
    h = hashlib.sha256()
    for name, t in sorted(tensors, key=lambda kv: kv[0]):
        h.update(f"{name}:{tuple(t.shape)};".encode())
        if t.is_meta or t.numel() == 0:
            continue
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        sample = flat[::step][:samples].to("cpu").to(torch.bfloat16).to(torch.float32)
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:24]


def audio_encoder_tensors(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """The tensors an audio latent depends on (encoder and latent statistics), named without ``audio_vae.``."""
    return [(k, v) for k, v in state.items() if k.startswith("encoder.") or k.startswith("per_channel_statistics.")]


def vae_encoder_tensors(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """The tensors a video latent depends on (encoder and latent statistics), named as in the checkpoint."""
    keep = ("per_channel_statistics.mean-of-means", "per_channel_statistics.std-of-means")
    return [(k, v) for k, v in state.items() if k.startswith("encoder.") or k in keep]


class EncodedTexts:
    """Captions encoded ahead of time, as a ``TextEncoder`` with the family, width and identity of the one that
    encoded them: a large text encoder (Gemma 3 12B) runs over every caption and is freed before the VAE loads."""

    def __init__(self, encoder: TextEncoder, captions: Iterable[str]) -> None:
        self.family, self.width, self._identity = encoder.family, encoder.width, encoder.identity()
        self.features = {caption: encoder.encode(caption) for caption in dict.fromkeys(captions)}

    def identity(self) -> str:
        return self._identity

    def encode(self, caption: str) -> torch.Tensor:
        if caption not in self.features:
            raise CacheError(f"caption {caption[:60]!r} was not among the captions encoded ahead of the cache run")
        return self.features[caption]
