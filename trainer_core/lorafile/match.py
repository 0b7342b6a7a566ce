"""How a LoRA fits one model: which layers ComfyUI would apply, skip or fail on, and whether the families agree.

A family conflict (a LoRA for another model, or a model of an unsupported family such as LTX-2.5) and an
"unknown family" (nothing in the file tells which supported model it is for: a q/k/v/out LoRA without metadata fits
LTX-2 and 2.3 alike) are problems beside missing and mis-shaped layers; the checked loader (``fit.fit_lora``) refuses
any problem unless forced. A LoRA that is "2.3 or 2.5" is taken as 2.3: 2.5 models are refused anyway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .family import FAMILY_NAMES, UNSUPPORTED, FamilyGuess, detect_family, model_family
from .layouts import ParsedLora, parse_lora
from .read import LoraFileError


@dataclass
class MatchReport:
    """How a LoRA fits one model: what ComfyUI would apply, skip, or fail on."""

    model_family: FamilyGuess
    matched: list[str]
    missing: list[str]  # no such layer in the model: ComfyUI logs "lora key not loaded" and skips it
    shape_mismatch: list[str]  # the layer exists with another shape: ComfyUI logs an error and skips it
    family_conflict: str | None
    unknown_family: str | None = None  # the LoRA's family cannot be verified against the model's

    @property
    def ok(self) -> bool:
        return not self.problems()

    def text(self) -> str:
        total = len(self.matched) + len(self.missing) + len(self.shape_mismatch)
        lines = [f"Model: {self.model_family.describe()}", f"Matching layers: {len(self.matched)} of {total}"]
        return "\n".join(lines + [f"PROBLEM: {p}" for p in self.problems()])

    def problems(self) -> list[str]:
        out = [p for p in (self.family_conflict, self.unknown_family) if p]
        for label, keys in (
            ("not in the model (would be skipped)", self.missing),
            ("shape differs from the model's", self.shape_mismatch),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                out.append(f"{len(keys)} LoRA modules {label}: {shown}")
        return out


def _names(families: tuple[str, ...]) -> str:
    return " or ".join(FAMILY_NAMES.get(c, c) for c in families)


def match_model(parsed: ParsedLora, family: FamilyGuess, model_weights: Mapping[str, torch.Size]) -> MatchReport:
    """Compare a LoRA with a model's weights (``{name without diffusion_model.: shape}``)."""
    target = model_family(model_weights)
    matched, missing, mismatch = [], [], []
    for name, m in parsed.modules.items():
        shape = model_weights.get(f"{name}.weight")
        if shape is None:
            missing.append(name)
        elif tuple(shape[:2]) != (int(m.up.shape[0]), int(m.down.shape[1])):
            mismatch.append(name)
        else:
            matched.append(name)
    conflict = unknown = None
    if target.family in UNSUPPORTED:
        conflict = f"the model is {FAMILY_NAMES[target.family]} ({target.reason}): {UNSUPPORTED[target.family]}"
    elif target.family and target.family not in family.candidates:
        conflict = (f"this LoRA is for {_names(family.candidates)} ({family.source}: {family.reason}) but the model "
                    f"is {FAMILY_NAMES[target.family]}")
    elif target.family and len([c for c in family.candidates if c not in UNSUPPORTED]) > 1:
        # LTX-2.3 and 2.5 LoRAs share every layer, but a 2.5 model is refused above: only 2.x vs 2.3 stays open.
        unknown = (f"unknown family: this LoRA fits {_names(family.candidates)} alike ({family.reason}), so it cannot "
                   f"be verified for this {FAMILY_NAMES[target.family]} model; apply it only if it was trained on "
                   "this model (the checked loader's force)")
    return MatchReport(target, matched, missing, mismatch, conflict, unknown)


def match_lora(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], model_weights: Mapping[str, torch.Size]
) -> tuple[ParsedLora, FamilyGuess, MatchReport]:
    """Parse a LoRA against a model's layer names (``{weight name without diffusion_model.: shape}``), tell its
    family and how it fits that model: what ComfyUI would apply, skip or fail on."""
    parsed = parse_lora(tensors, module_names=[k.removesuffix(".weight") for k in model_weights])
    family = detect_family(parsed, metadata)
    return parsed, family, match_model(parsed, family, model_weights)


# ltx-core's packed text encoder file (LTX-2.5's Gemma 4 with its projection) carries these.
_GEMMA_PACK_METADATA = "gemma_config"
_GEMMA_PACK_TOKENIZER = "tokenizer_json"


def checkpoint_weight_shapes(path: str | os.PathLike, prefix: str = "model.diffusion_model.") -> dict[str, torch.Size]:
    """``{weight name: shape}`` of the diffusion model in a single-file checkpoint, read from the header only."""
    from safetensors import SafetensorError, safe_open

    from .family import UnsupportedModelError

    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
            keys_in = [k for k in keys if k.startswith(prefix)]
            shapes = {k[len(prefix) :]: torch.Size(fh.get_slice(k).get_shape()) for k in keys_in}
            header = fh.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise LoraFileError(f"Cannot read the model checkpoint {path}: {err}") from None
    if not shapes and (_GEMMA_PACK_METADATA in header or _GEMMA_PACK_TOKENIZER in keys):
        raise UnsupportedModelError(
            f"{path} is LTX-2.5's packed Gemma 4 text encoder (with its text projection), not a model checkpoint: "
            "LTX-2.5 is not supported yet; use an LTX-2.3 single-file checkpoint"
        )
    if not shapes:
        raise LoraFileError(f"{path} has no '{prefix}*' weights; give a single-file LTX checkpoint")
    return shapes


def refuse_unsupported_checkpoint(path: str | os.PathLike) -> None:
    """``UnsupportedModelError`` for a checkpoint of an unsupported family (LTX-2.5), read from its header only."""
    from .family import refuse_unsupported

    from safetensors import safe_open

    try:
        shapes = checkpoint_weight_shapes(path)
    except LoraFileError:  # not a single file with model.diffusion_model.*: the model loader names that problem
        return
    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata() or {}
    try:
        config = json.loads(header.get("config") or "{}").get("transformer")
    except (json.JSONDecodeError, AttributeError):  # a damaged header config: the model loader names that problem
        config = None
    refuse_unsupported(model_family(shapes, config if isinstance(config, dict) else None), str(path))
