"""Atomic LoRA file writer: a crash, a full disk or a cancel never leaves a half-written file under the name."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..atomic import DiskWriteError, save_safetensors
from .read import LoraFileError

log = logging.getLogger(__name__)


def _check(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], path: Path) -> None:
    if not tensors:
        raise LoraFileError(f"Refusing to write {path}: the LoRA has no tensors")
    for key, value in tensors.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"{path}: tensor {key!r} must map a str to a torch.Tensor, got {type(value).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{path}: safetensors metadata must be str -> str; {key!r} is {type(value).__name__}")


def _plain(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors; safetensors refuses tensors that share storage, so only those get copied."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in tensors.items():
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[key] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def save_lora_file(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
    """Write ``tensors`` and ``metadata`` to the safetensors file ``path`` atomically; return the path.

    The data goes to a temporary file in the same folder which then replaces ``path`` in one step, so readers
    see the old file or the complete new one, never a partial one. Missing folders are created. Raises
    ``DiskWriteError`` (an ``OSError``) naming the path when the disk is full or the folder is not writable,
    ``TypeError`` for non-string metadata and ``LoraFileError`` for an empty LoRA.
    """
    path = Path(path)
    _check(tensors, metadata, path)
    plain = _plain(tensors)
    try:
        save_safetensors(path, plain, dict(metadata))
    except DiskWriteError:
        raise
    except OSError as err:
        raise DiskWriteError(
            err.errno, f"Cannot write the LoRA file {path}: {err.strerror or err}; choose a writable folder"
        ) from err
    log.info("Saved LoRA %s (%d tensors)", path, len(plain))
    return path
