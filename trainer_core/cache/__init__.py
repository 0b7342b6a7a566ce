"""Latent and text-feature cache: encode a prepared dataset once, train from the files many times.

Public API::

    from trainer_core.cache import build_cache, CachedData
    report = build_cache(dataset.items, "cache/", video_encoder, text_encoder, trigger=dataset.config.trigger)
    data = CachedData("cache/")          # the engine's TrainingData: data[i] -> Sample, data.empty_text

Modules: ``encoders`` (VideoEncoder / VideoDecoder / TextEncoder protocols, weight identities, CacheError),
``manifest`` (manifest.json), ``store`` (safetensors files), ``writer`` (``build_cache``), ``text_reuse`` (which
captions a headless run must encode, decided before Gemma loads), ``reader``
(``CachedData``), ``ltx_trainer_import`` (read an ltx-trainer ``.precomputed`` folder), ``standin_text`` (a
documented stand-in text encoder for tests and the demo). The encoders themselves live in the backend wings:
ComfyUI's VAE and CLIP in ``trainer_core.comfy.cache_encoders``, ltx-core's VAE in ``trainer_core.ltxcore.encoders``.
"""

from .encoders import CacheError, TextEncoder, VideoDecoder, VideoEncoder
from .reader import CachedData
from .writer import CacheReport, build_cache

__all__ = ["CacheError", "CacheReport", "CachedData", "TextEncoder", "VideoDecoder", "VideoEncoder", "build_cache"]
