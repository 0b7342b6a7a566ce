"""Apply a LoRA to a ComfyUI MODEL through ComfyUI's own LoRA machinery, checked and with per-stream strengths.

The LoRA is split by the stream each layer writes into (see ``inspect.is_audio_stream``: the audio self/text
attention, audio FFN, video-to-audio attention and audio AdaLN layers are "audio"; everything else "video")
and each part is patched with its own strength on a clone of the MODEL, exactly as ComfyUI's LoraLoader does
(``comfy.lora.load_lora`` + ``ModelPatcher.add_patches``). The input MODEL is never modified. ComfyUI is
imported inside the functions only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .inspect import FamilyGuess, MatchReport, is_audio_stream, match_lora
from .layouts import ParsedLora, to_layout
from .read import LoraFileError

log = logging.getLogger(__name__)


class LoraMismatchError(LoraFileError):
    """The LoRA does not fit the model (other family, missing or differently shaped layers)."""


@dataclass
class ApplyReport:
    """What was applied, with which strength, and what was left out."""

    name: str
    family: FamilyGuess
    match: MatchReport
    strength_video: float
    strength_audio: float
    applied_video: int = 0
    applied_audio: int = 0
    forced: bool = False
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [
            f"LoRA: {self.name}",
            f"LoRA family: {self.family.describe()}",
            f"Model: {self.match.model_family.describe()}",
            f"Applied {self.applied_video} video-stream layers at strength {self.strength_video:g} and "
            f"{self.applied_audio} audio-stream layers at strength {self.strength_audio:g}",
        ]
        problems = self.match.problems()
        if problems:
            lines.append("FORCED despite:" if self.forced else "Problems:")
            lines += [f"  {p}" for p in problems]
        lines += self.notes
        return "\n".join(lines)


def model_weight_shapes(model: Any) -> dict[str, torch.Size]:
    """``{weight name without diffusion_model.: shape}`` of a ComfyUI MODEL (a ModelPatcher)."""
    return {k: v.shape for k, v in model.model.diffusion_model.state_dict().items()}


def _refusal(name: str, match: MatchReport, unsupported: list[str]) -> str:
    problems = match.problems()
    if unsupported:
        problems.append(f"{len(unsupported)} keys are not plain LoRA weights (e.g. {unsupported[0]})")
    return (
        f"Refusing to apply {name}: " + "; ".join(problems) + ". A LoRA trained on another base model gives "
        "wrong output (LTX-2 LoRAs on LTX-2.3 produce garbage). Use a LoRA for this model, or set 'force' to "
        "apply the matching layers anyway."
    )


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
    """Return a patched clone of ``model`` and a report.

    Raises ``LoraMismatchError`` when the LoRA's family differs from the model's, when any of its layers is
    missing from the model or shaped differently (ComfyUI would skip it silently), or when it holds non-LoRA
    keys; with ``force`` the matching layers are applied and the report lists what was left out.
    """
    import comfy.lora

    shapes = model_weight_shapes(model)
    parsed, family, match = match_lora(tensors, metadata, shapes)
    if not (match.ok and not parsed.unsupported) and not force:
        raise LoraMismatchError(_refusal(name, match, parsed.unsupported))
    report = ApplyReport(name, family, match, strength_video, strength_audio, forced=force)
    if not family.family:
        report.notes.append("Note: the base model could not be verified from this file (see family above).")
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    patched = model
    for audio in (False, True):
        strength = strength_audio if audio else strength_video
        part = {n: parsed.modules[n] for n in match.matched if is_audio_stream(n) == audio}
        if not part or strength == 0:
            continue
        patched, count = _patch(patched, ParsedLora("comfy", part, []), strength, key_map)
        if audio:
            report.applied_audio = count
        else:
            report.applied_video = count
    if patched is model:
        patched = model.clone()
    patched.set_attachments("lora_metadata", dict(metadata))
    log.info("%s", report.text())
    return patched, report
