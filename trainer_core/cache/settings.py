"""The cache folder and item list named by the cache settings (``trainer_core.config.cache``), resolved."""

from __future__ import annotations

from pathlib import Path

from .encoders import CacheError


def resolve_folder(folder: str, base: str | Path) -> Path:
    """``folder`` as given when absolute, else under ``base`` (ComfyUI's output folder, or the working dir).

    A relative name must stay under ``base``: ``..`` that climbs out of it is a mistake (or a hostile prompt), while
    a cache meant to live elsewhere is named by its absolute path."""
    if not folder.strip():
        raise CacheError("the cache folder is empty: give a name (e.g. ltx_lora_cache/my_dataset) or an absolute path")
    path = Path(folder.strip()).expanduser()
    if path.is_absolute():
        return path
    if not (Path(base) / path).resolve().is_relative_to(Path(base).resolve()):
        raise CacheError(
            f"cache folder {folder.strip()!r} climbs out of {base}: give a name under it (e.g. "
            "ltx_lora_cache/my_dataset), or an absolute path if the cache should live elsewhere"
        )
    return Path(base) / path


def parse_items(spec: str, ids: list[str]) -> list[int]:
    """Positions named by ``spec`` (``"0, 3, clips/a.mp4"``); an unknown entry raises ``CacheError``."""
    out = []
    for part in (p.strip() for p in (spec or "0").split(",")):
        if not part:
            continue
        if part.isdigit() and part not in ids:
            index = int(part)
            if index >= len(ids):
                raise CacheError(f"item {index} does not exist: the cache has {len(ids)} items (0-{len(ids) - 1})")
            out.append(index)
        elif part in ids:
            out.append(ids.index(part))
        else:
            raise CacheError(f"no cached item {part!r}; items are numbered 0-{len(ids) - 1} or named e.g. {ids[0]!r}")
    return out or [0]
