"""Reading LoRA safetensors files, with one clear error type for every way a file can be unusable."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import UserError
from .metadata import REFERENCE_DOWNSCALE_FACTOR, REFERENCE_TEMPORAL_SCALE_FACTOR

# Tensor-name endings that mark a key as part of a LoRA (or LyCORIS) adapter, in any of the layouts we read.
_LORA_MARKERS = (
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora_down.weight",
    ".lora_up.weight",
    ".lora_A.default.weight",
    ".lora_B.default.weight",
    ".lora.down.weight",
    ".lora.up.weight",
    "_lora.down.weight",
    "_lora.up.weight",
    ".hada_w1_a",
    ".lokr_w1",
    ".lokr_w1_a",
)
_MAX_HEADER = 100 * 1024 * 1024


class LoraFileError(UserError, ValueError):
    """A LoRA file is missing, unreadable, not safetensors, or holds no LoRA weights; the message says which."""


def is_lora_key(key: str) -> bool:
    """Whether ``key`` names a LoRA/LyCORIS adapter weight (not an alpha, not a base-model weight)."""
    return key.endswith(_LORA_MARKERS)


def _check_header(path: Path) -> None:
    # safetensors' own messages ("HeaderTooLarge") do not tell a user that the file is not safetensors at all.
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise LoraFileError(f"{path} is not a safetensors file ({size} bytes, too short for a header)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > min(size - 8, _MAX_HEADER):
            raise LoraFileError(
                f"{path} is not a safetensors file (bad header length {n} in a {size}-byte file); "
                "was it saved as .ckpt/.pt or truncated by an interrupted download?"
            )
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise LoraFileError(f"{path} has a corrupt safetensors header ({err}); re-download or re-save it") from None
    if not isinstance(header, dict):
        raise LoraFileError(f"{path} has a corrupt safetensors header (not a JSON object)")


def read_lora_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a LoRA safetensors file: ``(tensors, metadata)``.

    Raises ``LoraFileError`` when the file is missing, is not a safetensors file, is truncated or corrupt, or
    holds no LoRA adapter weights (e.g. a full checkpoint picked by mistake).
    """
    path = Path(path)
    if not path.is_file():
        raise LoraFileError(f"LoRA file not found: {path}")
    try:
        _check_header(path)
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is not a mapping
    except OSError as err:
        raise LoraFileError(f"Cannot read {path}: {err.strerror or err}") from err
    except SafetensorError as err:
        raise LoraFileError(
            f"{path} is a corrupt or truncated safetensors file ({err}); re-download or re-save it"
        ) from None
    if not any(is_lora_key(k) for k in tensors):
        sample = ", ".join(sorted(tensors)[:3]) or "no tensors"
        raise LoraFileError(
            f"{path} holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up keys; found "
            f"{len(tensors)} tensors such as {sample}). Is it a model checkpoint rather than a LoRA?"
        )
    return tensors, metadata


def reference_factors(metadata: dict[str, str], where: str) -> tuple[int, int] | None:
    """An IC-LoRA's (spatial N, temporal S) reference factors from its bare metadata keys (S is 1 when the file has
    no ``reference_temporal_scale_factor``, as ltx-pipelines reads it); None for a LoRA that is not an IC-LoRA (no
    ``reference_downscale_factor``). ``LoraFileError`` naming ``where`` when a value is not a whole number >= 1."""
    if REFERENCE_DOWNSCALE_FACTOR not in metadata:
        return None
    out = []
    for key, default in ((REFERENCE_DOWNSCALE_FACTOR, None), (REFERENCE_TEMPORAL_SCALE_FACTOR, "1")):
        raw = metadata.get(key, default)
        try:
            number = float(raw)
        except (TypeError, ValueError):
            number = 0.0
        if number < 1 or not number.is_integer():
            raise LoraFileError(f"{where}: metadata {key} is {raw!r}, not a whole number >= 1; re-save the IC-LoRA "
                                "with its training factor")
        out.append(int(number))
    return out[0], out[1]
