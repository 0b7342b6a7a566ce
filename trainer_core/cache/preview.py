"""Decode cached latents back to frames, to check a cache by eye (like ltx-trainer's ``--decode``)."""

from __future__ import annotations

import logging

import torch

from .encoders import CacheError, VideoDecoder
from .reader import CachedData

logger = logging.getLogger(__name__)


def decode_items(data: CachedData, decoder: VideoDecoder, indices: list[int]) -> tuple[torch.Tensor, str]:
    """Frames ``[sum F, H, W, 3]`` of the chosen items, one after another, and a line describing them.

    The note warns when the decoder is not the VAE that encoded the cache (the frames then show that VAE's
    reading of another VAE's latents).
    """
    shapes = {tuple(data.shape_of(i)[2:4]) for i in indices}  # H', W' (audio's shape follows the video's)
    if len(shapes) > 1:
        raise CacheError(
            f"items {indices} have different resolutions (latent sizes {sorted(shapes)}); preview items of one "
            "bucket at a time"
        )
    frames = [decoder.decode(_finite_video(data, i)) for i in indices]
    ids = ", ".join(f"{i}: {data.records[i].id} ({f.shape[0]} frames)" for i, f in zip(indices, frames, strict=True))
    note = f"decoded {ids}"
    vae = data.model.get("vae")
    if vae and vae != decoder.identity():
        note += (f"\nnote: this VAE ({decoder.identity()}) is not the one that made the cache ({vae}); "
                 "connect the VAE used for caching")
        logger.warning("%s", note)
    return torch.cat(frames), note


def _finite_video(data: CachedData, index: int) -> torch.Tensor:
    """The cached video latent of item ``index``; NaN or Inf in it (a damaged file) raises ``CacheError`` naming it,
    since decoding it would show a black or garbage frame as if that were the clip."""
    video = data[index].video
    if not torch.isfinite(video).all():
        record = data.records[index]
        raise CacheError(
            f"cached item {index} ({record.id}) holds NaN or Inf values in {data.folder / record.latent}: the cache "
            "file is damaged; delete that file and run Cache LTX Training Latents again on this folder (it "
            "re-encodes missing items)"
        )
    return video
