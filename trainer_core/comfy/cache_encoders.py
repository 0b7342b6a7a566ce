"""ComfyUI's loaded VAE and text encoder (CLIP) as the cache's encoders, reused as they are (no second copy).

``ComfyVideoVae`` wraps ``comfy.sd.VAE`` (``encode`` / ``encode_tiled`` / ``decode``) and refuses anything but
an LTX-2.x video VAE; ``ComfyLtxTextEncoder`` wraps ``comfy.sd.CLIP`` (``tokenize`` +
``encode_from_tokens_scheduled``, exactly what *CLIP Text Encode* does) and refuses anything but LTX's Gemma
text encoder. Both take their identity from the loaded weights, so another checkpoint invalidates the cache.
Imported lazily (only inside ComfyUI).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..cache.encoders import (
    LATENT_CHANNELS,
    SPATIAL_FACTOR,
    TEMPORAL_FACTOR,
    TEXT_FAMILY_LTX2,
    TEXT_FAMILY_LTX23,
    VIDEO_FAMILY,
    CacheError,
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
