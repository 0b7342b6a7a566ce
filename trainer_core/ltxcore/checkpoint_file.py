"""The base-model checkpoint file, checked from its header before anything loads.

Loading a 22B checkpoint takes minutes, and a LoRA, a pickle or a text file given in its place failed deep inside
safetensors or ltx-core with a traceback. ``check_base_checkpoint`` reads only the first bytes and the safetensors
header, says what the file is when it is not an LTX-2.x single-file checkpoint, and returns its family.
``vae_identity`` gives the identity the cache records for the checkpoint's video VAE, read from the file alone.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ..cache.encoders import vae_encoder_tensors, weights_identity
from ..errors import UserError
from ..lorafile.read import is_lora_key
from .model import (
    TRANSFORMER_PREFIX,
    VAE_ENCODER_PREFIX,
    VAE_STATS_PREFIX,
    config_family,
    quantized_refusal,
    read_checkpoint_config,
)

_HINT = "give the LTX-2.3 single-file checkpoint (e.g. ltx-2.3-22b-dev.safetensors)"
_MAX_HEADER = 100 * 1024 * 1024


class ModelFileError(UserError, ValueError):
    """The base-model checkpoint is missing, not safetensors, or not an LTX-2.x checkpoint; the message says which."""


def _not_safetensors(path: Path) -> str | None:
    """What the file is when it is not a safetensors file (None: it looks like one)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(4096)
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= min(size - 8, _MAX_HEADER) and head[8:9] == b"{":
            return None
        if n > size - 8 and head[8:9] == b"{":
            return f"a truncated safetensors file (its header alone is {n} bytes, the file {size}; an interrupted copy?)"
    if head.startswith(b"PK\x03\x04"):
        return "a PyTorch zip checkpoint (torch.save: .pt/.ckpt/.bin), not a safetensors file"
    if head[:1] == b"\x80":
        return "a Python pickle (.pt/.ckpt/.pkl), not a safetensors file"
    if head.startswith(b"GGUF"):
        return "a GGUF file, not a safetensors file"
    try:
        head.decode("utf-8")
        return "a text file, not a safetensors file" if head else "an empty file"
    except UnicodeDecodeError:
        return "not a safetensors file"


def check_base_checkpoint(path: str | Path, setting: str, *, needs_vae: bool = False, trains: bool = False) -> str:
    """The family (``ltx-2.3`` or ``ltx-2``) of the single-file checkpoint at ``path``, read from its header.

    Raises ``ModelFileError`` naming ``setting`` and the file when it is missing, not safetensors, a LoRA, lacks the
    transformer (or, with ``needs_vae``, the video VAE encoder) or has no LTX-2.x config header; with ``trains`` (the
    headless trainer loads its transformer) also when it is in ComfyUI's scaled-fp8 layout. Caching reads only the
    VAE, which such a file holds unquantized.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{setting} {path}: checkpoint not found; {_HINT}")
    what = _not_safetensors(path)
    if what is not None:
        raise ModelFileError(f"{setting} {path} is {what}; {_HINT}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())  # noqa: SIM118 - safe_open is not a dict
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{setting} {path} is a damaged safetensors file ({err}); {_HINT}") from None
    has_transformer = f"{TRANSFORMER_PREFIX}patchify_proj.weight" in keys
    if not has_transformer and any(is_lora_key(k) for k in keys):
        raise ModelFileError(
            f"{setting} {path}: this is a LoRA file, not a base model checkpoint. Load it as a LoRA (Load LTX LoRA, "
            f"or `lora inspect`), and {_HINT}"
        )
    if not has_transformer or not any(k.startswith(f"{TRANSFORMER_PREFIX}transformer_blocks.") for k in keys):
        raise ModelFileError(
            f"{setting} {path} holds no LTX transformer weights ({TRANSFORMER_PREFIX}*; {len(keys)} tensors): it is "
            f"not an LTX-2.x single-file checkpoint (a VAE, a text encoder or a diffusers part?); {_HINT}"
        )
    refusal = quantized_refusal(path, keys) if trains else None
    if refusal is not None:
        raise ModelFileError(f"{setting} {refusal}")
    if needs_vae and not any(k.startswith(VAE_ENCODER_PREFIX) for k in keys):
        raise ModelFileError(f"{setting} {path} has no video VAE ({VAE_ENCODER_PREFIX}*) to encode the clips; {_HINT}")
    try:
        return config_family(read_checkpoint_config(path))
    except ValueError as err:
        raise ModelFileError(f"{setting} {err}") from None


def vae_identity(path: str | Path) -> str | None:
    """The identity of the checkpoint's video VAE encoder as the cache records it (None: it has no VAE)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        names = [k for k in f.keys() if k.startswith((VAE_ENCODER_PREFIX, VAE_STATS_PREFIX))]  # noqa: SIM118
        state = {k.removeprefix("vae."): f.get_tensor(k) for k in names}
    return weights_identity(vae_encoder_tensors(state), samples=1024) if state else None
