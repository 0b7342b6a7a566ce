"""The cache folder a run trains from, given a config's ``data``: our cache, or an ltx-trainer preprocessed folder.

ltx-trainer's ``data.preprocessed_data_root`` names a folder whose ``.precomputed`` child (or the folder itself)
holds ``latents/`` and ``conditions/``; a translated ltx-trainer config keeps that path, so ``train`` and the Train
node import it into a cache inside the run's folder (incrementally: unchanged items are not converted again) and
train from that.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

IMPORTED_CACHE = "ltx_trainer_cache"


def training_folder(data: str | Path, output_dir: str | Path) -> Path:
    """``data`` when it is our cache (or anything else: ``CachedData`` then says what is wrong), else the cache
    imported from the ltx-trainer preprocessed folder it names, at ``output_dir/ltx_trainer_cache``."""
    from ..cache.encoders import CacheError
    from ..cache.ltx_trainer_import import find_precomputed, import_ltx_trainer
    from ..cache.manifest import MANIFEST_NAME

    folder = Path(data).expanduser()
    if (folder / MANIFEST_NAME).is_file():
        return folder
    try:
        root = find_precomputed(folder)
    except CacheError:
        return folder
    target = Path(output_dir) / IMPORTED_CACHE
    report = import_ltx_trainer(root, target)
    log.info("data: %s is an ltx-trainer preprocessed folder; imported into %s (%d converted, %d unchanged)",
             root, target, len(report.encoded_latents), len(report.skipped))
    return target
