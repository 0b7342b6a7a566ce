"""The one way this pack applies a LoRA to ComfyUI's MODEL: checked, with separate video and audio strengths.

Used by *Load LTX LoRA (checked)*, the Train node's MODEL output and the sweep's rows. ``lorafile.fit`` decides
what may be applied at which strength (or refuses); each stream's part is then patched on a clone of the MODEL
exactly as ComfyUI's LoraLoader does (``comfy.lora.load_lora`` + ``ModelPatcher.add_patches``). The input MODEL
is never modified; the patched clone carries the file's metadata as the ``lora_metadata`` attachment. ComfyUI is
imported inside the functions only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..lorafile.fit import ApplyReport, fit_lora
from ..lorafile.layouts import ParsedLora, to_layout
from ..lorafile.read import read_lora_file

log = logging.getLogger(__name__)


def model_weight_shapes(model: Any) -> dict[str, torch.Size]:
    """``{weight name without diffusion_model.: shape}`` of a ComfyUI MODEL (a ModelPatcher)."""
    return {k: v.shape for k, v in model.model.diffusion_model.state_dict().items()}


def _patch(model: Any, modules: ParsedLora, strength: float, key_map: dict[str, str]) -> tuple[Any, int]:
    import comfy.lora
    import comfy.lora_convert

    lora = comfy.lora_convert.convert_lora(to_layout(modules, "comfy"))
    patches = comfy.lora.load_lora(lora, key_map)
    patched = model.clone()
    applied = patched.add_patches(patches, strength)
    return patched, len(applied)


def apply_lora(
    model: Any,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    strength_video: float = 1.0,
    strength_audio: float = 1.0,
    force: bool = False,
    name: str = "LoRA",
) -> tuple[Any, ApplyReport]:
    """A patched clone of ``model`` and a report; raises ``LoraMismatchError`` as ``lorafile.fit.fit_lora`` does."""
    import comfy.lora

    report, parts = fit_lora(
        tensors,
        metadata,
        model_weight_shapes(model),
        strength_video=strength_video,
        strength_audio=strength_audio,
        force=force,
        name=name,
    )
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    patched = model
    for part in parts:
        patched, count = _patch(patched, part.lora, part.strength, key_map)
        if part.audio:
            report.applied_audio = count
        else:
            report.applied_video = count
    if patched is model:
        patched = model.clone()
    patched.set_attachments("lora_metadata", dict(metadata))
    log.info("%s", report.text())
    return patched, report


def apply_lora_file(
    model: Any,
    path: str | Path,
    *,
    strength_video: float = 1.0,
    strength_audio: float = 1.0,
    force: bool = False,
    name: str | None = None,
) -> tuple[Any, ApplyReport]:
    """``apply_lora`` on the LoRA file at ``path`` (read and checked by ``lorafile.read_lora_file``)."""
    tensors, metadata = read_lora_file(Path(path))
    return apply_lora(
        model,
        tensors,
        metadata,
        strength_video=strength_video,
        strength_audio=strength_audio,
        force=force,
        name=name or Path(path).name,
    )
