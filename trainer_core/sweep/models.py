"""One ComfyUI MODEL per sweep row, patched by the pack's one LoRA loader (``comfy.lora.apply_lora``).

The base row is the input MODEL object itself (exactly the base model); every LoRA row is a ``clone()`` of it
with the LoRA's patches at that strength on both streams. Clones share the weights; ComfyUI patches and
unpatches them as each cell's sampler loads its clone, as it does for any LoRA loader. Each row's MODEL is what
*Load LTX LoRA (checked)* gives for that file with both strengths at the row's strength. Imports ComfyUI lazily
(through ``apply_lora``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..comfy.lora import apply_lora
from ..lorafile.read import read_lora_file
from .plan import SweepPlan

log = logging.getLogger(__name__)


def row_models(model: Any, plan: SweepPlan, force: bool = False) -> list[Any]:
    """The MODEL for each row of ``plan`` (index = row); each LoRA file is read once."""
    files: dict[Path, tuple[dict, dict]] = {}
    out = []
    for variant in plan.variants:
        if variant.lora is None:
            out.append(model)
            continue
        if variant.lora not in files:
            files[variant.lora] = read_lora_file(variant.lora)
        tensors, metadata = files[variant.lora]
        patched, _ = apply_lora(
            model,
            tensors,
            metadata,
            strength_video=variant.strength,
            strength_audio=variant.strength,
            force=force,
            name=variant.lora.name,
        )
        out.append(patched)
    log.info("sweep: %d rows, %d LoRA files", len(out), len(files))
    return out
