"""Cache settings: the *Cache LTX Training Latents* and *Preview Cached Latents* widgets and the ``cache`` CLI.

``CacheConfig`` is where a cache goes and how clips are encoded; ``PreviewConfig`` which cached items the preview
node decodes. Resolving the folder and the item list lives with the cache (``trainer_core.cache.settings``).
"""

from __future__ import annotations

from .base import Section, knob


class CacheConfig(Section):
    """Where the cache goes and how clips are encoded."""

    folder: str = knob(
        "ltx_lora_cache/my_dataset",
        "Cache folder: a name under ComfyUI's output folder, or an absolute path. Re-running into the same folder "
        "only encodes what changed.",
    )
    tiled_vae: bool = knob(
        False,
        "Encode clips in tiles (512 px, 64 frames) to fit small GPUs; slightly slower, latents differ a little at "
        "tile seams.",
    )


class PreviewConfig(Section):
    """Which cached items *Preview Cached Latents* decodes."""

    items: str = knob(
        "0",
        "Items to decode: positions (0 = first) or item ids (file names relative to the dataset), separated by "
        "commas. Items must share one resolution.",
    )
