"""Tensor files of the cache: safetensors written atomically, read lazily (memory-mapped), never pickle."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from ..atomic import write_atomic
from .encoders import CacheError


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> dict:
    """Write ``tensors`` to ``path`` atomically; return ``{"bytes", "sha256"}`` of the file for the manifest."""
    data = safetensors_bytes({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)
    write_atomic(path, data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def load_tensors(path: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Read ``names`` from a cache file; a missing or damaged file raises ``CacheError`` naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in names}
    except FileNotFoundError:
        raise CacheError(
            f"cache file {path} is missing; run the Cache LTX Training Latents node (or `python -m trainer_core "
            "cache`) again on this folder: it re-encodes missing items"
        ) from None
    except (SafetensorError, OSError, KeyError) as err:
        raise CacheError(
            f"cache file {path} is unreadable ({err}); run the cache step again on this folder to re-encode it"
        ) from err


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in chunks (source clips can be large)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_stem(item_id: str) -> str:
    """A readable, filesystem-safe file name stem for an item id (uniqueness comes from a digest beside it)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", item_id)[-60:].strip("._") or "item"


def short_digest(*parts: str) -> str:
    """16 hex digits of sha256 over ``parts``."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
