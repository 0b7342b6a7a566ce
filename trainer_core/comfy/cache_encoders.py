"""ComfyUI's loaded VAE and text encoder (CLIP) as the cache's encoders, reused as they are (no second copy).

``ComfyVideoVae`` wraps ``comfy.sd.VAE`` (``encode`` / ``encode_tiled`` / ``decode``) and refuses anything but
an LTX-2.x video VAE; ``ComfyLtxTextEncoder`` wraps ``comfy.sd.CLIP`` (``tokenize`` +
``encode_from_tokens_scheduled``, exactly what *CLIP Text Encode* does) and refuses anything but LTX's Gemma
text encoder; ``ComfyAudioVae`` wraps the audio VAE that *Load LTXV Audio VAE* returns. All take their identity
from the loaded weights, so another checkpoint invalidates the cache.
Imported lazily (only inside ComfyUI).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..cache.encoders import (
    AUDIO_FAMILY,
    AUDIO_LATENT_CHANNELS,
    AUDIO_SAMPLE_RATE,
    LATENT_CHANNELS,
    SPATIAL_FACTOR,
    TEMPORAL_FACTOR,
    TEXT_FAMILY_LTX2,
    TEXT_FAMILY_LTX23,
    VIDEO_FAMILY,
    CacheError,
    audio_encoder_tensors,
    fit_audio_latent,
    vae_encoder_tensors,
    weights_identity,
)

logger = logging.getLogger(__name__)

# ComfyUI's VAEEncodeTiled defaults: spatial tile 512 px, overlap 64; temporal tile 64 frames, overlap 8.
TILE, OVERLAP, TILE_T, OVERLAP_T = 512, 64, 64, 8


def describe_vae(vae: Any) -> str:
    model = getattr(vae, "first_stage_model", None)
    return (f"{type(model).__name__} with {getattr(vae, 'latent_channels', '?')} latent channels, "
            f"{getattr(vae, 'latent_dim', '?')}-D latents")


def check_ltx_vae(vae: Any) -> None:
    """Raise ``CacheError`` unless ``vae`` is an LTX-2.x video VAE (128 channels, x32 space, x8 time)."""
    ok = getattr(vae, "latent_channels", None) == LATENT_CHANNELS and getattr(vae, "latent_dim", None) == 3
    if ok:
        ratio = vae.downscale_ratio
        ok = (isinstance(ratio, tuple) and callable(ratio[0]) and ratio[0](1 + 2 * TEMPORAL_FACTOR) == 3
              and vae.spacial_compression_encode() == SPATIAL_FACTOR)
    if not ok:
        raise CacheError(
            f"the VAE input is not an LTX-2.x video VAE ({describe_vae(vae)}); connect the VAE output of the "
            "LTX-2.3 checkpoint loader (128 latent channels, 32x spatial and 8x temporal compression)"
        )


class ComfyVideoVae:
    """``comfy.sd.VAE`` of LTX-2.x as ``VideoEncoder`` and ``VideoDecoder``."""

    family = VIDEO_FAMILY

    def __init__(self, vae: Any, tiled: bool = False) -> None:
        check_ltx_vae(vae)
        self.vae, self.tiled = vae, tiled
        self._identity = weights_identity(vae_encoder_tensors(vae.get_sd()), samples=1024)

    def identity(self) -> str:
        return self._identity

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """IMAGE ``[F, H, W, 3]`` 0..1 -> ``[128, F', H/32, W/32]`` float32 on the CPU."""
        if self.tiled:
            latent = self.vae.encode_tiled(frames, tile_x=TILE, tile_y=TILE, overlap=OVERLAP, tile_t=TILE_T,
                                           overlap_t=OVERLAP_T)
        else:
            latent = self.vae.encode(frames)
        return latent[0].to("cpu", torch.float32)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``[128, F', H', W']`` -> IMAGE ``[F, H, W, 3]``."""
        if self.tiled:
            images = self.vae.decode_tiled(latent.unsqueeze(0), tile_x=TILE // SPATIAL_FACTOR,
                                           tile_y=TILE // SPATIAL_FACTOR, overlap=OVERLAP // SPATIAL_FACTOR)
        else:
            images = self.vae.decode(latent.unsqueeze(0))
        return images.reshape(-1, *images.shape[-3:]).to("cpu", torch.float32)


def _text_identity_tensors(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """Names and shapes of everything; values of the projection, token embeddings and norms (cheap to read).

    Sampling every tensor of a 12B model would touch gigabytes of memory-mapped weights; the norms, the
    embedding table and the projection differ between any two trainings of the model.
    """
    picked = []
    for key, value in state.items():
        wanted = "text_embedding_projection" in key or "embed_tokens" in key or key.endswith("norm.weight")
        picked.append((key, value if wanted else value.to("meta")))
    return picked


class ComfyLtxTextEncoder:
    """``comfy.sd.CLIP`` loaded as LTX-2.x's Gemma text encoder, as ``TextEncoder``."""

    def __init__(self, clip: Any) -> None:
        model = getattr(clip, "cond_stage_model", None)
        kind = getattr(model, "text_projection_type", None)
        projection = getattr(model, "text_embedding_projection", None)
        if kind == "dual_linear":
            self.family = TEXT_FAMILY_LTX23
            self.width = projection.video_aggregate_embed.out_features + projection.audio_aggregate_embed.out_features
        elif kind == "single_linear":
            self.family, self.width = TEXT_FAMILY_LTX2, projection.out_features
        else:
            raise CacheError(
                f"the CLIP input is not LTX's text encoder ({type(model).__name__}); load Gemma 3 with the LTX-2.3 "
                "checkpoint (LTXV Audio Text Encoder Loader, or CLIP loader with type 'ltxv')"
            )
        self.clip = clip
        self._identity = weights_identity(_text_identity_tensors(model.state_dict()), samples=1024)

    def identity(self) -> str:
        return self._identity

    def encode(self, caption: str) -> torch.Tensor:
        """``[1, T, width]`` float32 on the CPU, as *CLIP Text Encode* would give the sampler."""
        cond = self.clip.encode_from_tokens_scheduled(self.clip.tokenize(caption), show_pbar=False)
        features, extra = cond[0][0], cond[0][1]
        if not extra.get("unprocessed_ltxav_embeds", False):
            raise CacheError("the CLIP input did not produce LTX conditioning (no 'unprocessed_ltxav_embeds'); "
                             "connect LTX-2.3's text encoder")
        return features.to("cpu", torch.float32)


class ComfyAudioVae:
    """The ``comfy.sd.VAE`` of *Load LTXV Audio VAE* as ``AudioEncoder`` and ``AudioDecoder``.

    ``encode`` runs ComfyUI's own ``AudioVAE.encode`` (its torchaudio log-mel, the posterior mode, the per-channel
    normalisation) on the 16 kHz waveform, told that it is 16 kHz. Stock *LTXV Audio VAE Encode* instead treats
    its input as 44.1 kHz-bound (``VAE.audio_sample_rate`` is 44100 for this VAE): it resamples 16 kHz audio up
    to 44.1 kHz and the VAE resamples it back down, which this wrapper skips. The model is loaded the way
    ``VAE.encode`` loads it (``load_models_gpu`` with the VAE's memory estimate).
    """

    family = AUDIO_FAMILY

    def __init__(self, vae: Any) -> None:
        model = getattr(vae, "first_stage_model", None)
        ok = (type(model).__name__ == "AudioVAE" and getattr(vae, "latent_channels", None) == AUDIO_LATENT_CHANNELS
              and getattr(model, "sample_rate", None) == AUDIO_SAMPLE_RATE)
        if not ok:
            raise CacheError(
                f"the audio VAE input is not LTX-2.x's audio VAE ({describe_vae(vae)}); connect 'Load LTXV Audio "
                "VAE' with the LTX-2.3 checkpoint"
            )
        self.vae, self.sample_rate = vae, int(model.output_sample_rate)
        state = {k.removeprefix("autoencoder."): v for k, v in vae.get_sd().items() if k.startswith("autoencoder.")}
        self._identity = weights_identity(audio_encoder_tensors(state), samples=1024)

    def identity(self) -> str:
        return self._identity

    def _load(self, shape: tuple[int, ...], estimate: Any) -> None:
        import comfy.model_management as mm

        self.vae.throw_exception_if_invalid()
        mm.load_models_gpu([self.vae.patcher], memory_required=estimate(shape, self.vae.vae_dtype),
                           force_full_load=self.vae.disable_offload)

    @torch.inference_mode()
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Stereo ``[2, samples]`` at 16 kHz -> normalized ``[8, round(samples / 640), 16]`` float32 on the CPU."""
        if waveform.ndim != 2 or waveform.shape[0] != 2:
            raise CacheError(f"audio waveform must be [2, samples] (stereo, 16 kHz), got {tuple(waveform.shape)}")
        x = waveform.unsqueeze(0)
        self._load(tuple(x.shape), self.vae.memory_used_encode)
        x = x.to(self.vae.device, self.vae.vae_dtype)
        latent = self.vae.first_stage_model.encode(x, sample_rate=AUDIO_SAMPLE_RATE)
        return fit_audio_latent(latent[0].to("cpu", torch.float32), waveform.shape[-1], "ComfyUI audio VAE")

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalized ``[8, T, 16]`` -> waveform ``[2, samples]`` at ``sample_rate``, as LTXVAudioVAEDecode does."""
        audio = self.vae.decode(latent.unsqueeze(0)).movedim(-1, 1)
        return audio[0].to("cpu", torch.float32)
