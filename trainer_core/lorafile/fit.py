"""Whether a LoRA may be applied to a model, and what to apply at which strength (plain PyTorch, no ComfyUI).

The LoRA is split by the stream each layer writes into (see ``modules.is_audio_stream``: the audio self/text
attention, audio FFN, video-to-audio attention and audio AdaLN layers are "audio"; everything else "video"),
each part with its own strength. A LoRA for another model family, with layers the model lacks or shapes it does
not have, or with non-LoRA keys is refused unless forced. ``trainer_core.comfy.lora`` patches ComfyUI's MODEL
with the result; it is the only place that does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .family import FamilyGuess
from .match import MatchReport, match_lora
from .modules import is_audio_stream
from .layouts import ParsedLora, nonfinite_modules
from .read import LoraFileError


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


@dataclass(frozen=True)
class StreamPart:
    """The layers of one stream to patch, with that stream's strength."""

    audio: bool
    strength: float
    lora: ParsedLora


def _refusal(name: str, match: MatchReport, unsupported: list[str]) -> str:
    problems = match.problems()
    if unsupported:
        problems.append(f"{len(unsupported)} keys are not plain LoRA weights (e.g. {unsupported[0]})")
    return (
        f"Refusing to apply {name}: " + "; ".join(problems) + ". A LoRA trained on another base model gives "
        "wrong output (LTX-2 LoRAs on LTX-2.3 produce garbage). Use a LoRA for this model, or set 'force' to "
        "apply the matching layers anyway."
    )


def fit_lora(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    model_shapes: Mapping[str, torch.Size],
    *,
    strength_video: float = 1.0,
    strength_audio: float = 1.0,
    force: bool = False,
    name: str = "LoRA",
) -> tuple[ApplyReport, list[StreamPart]]:
    """The report (counts still 0) and the non-empty, non-zero-strength stream parts to patch.

    ``model_shapes`` is ``{weight name without diffusion_model.: shape}``. Raises ``LoraMismatchError`` when the
    LoRA's family differs from the model's, when any of its layers is missing from the model or shaped
    differently (ComfyUI would skip it silently), or when it holds non-LoRA keys; with ``force`` the matching
    layers are kept and the report lists what was left out.
    """
    parsed, family, match = match_lora(tensors, metadata, model_shapes)
    damaged = nonfinite_modules(parsed)
    if damaged:  # not even with force: every output would be NaN
        raise LoraFileError(
            f"Refusing to apply {name}: {len(damaged)} of its layers hold NaN or Inf values "
            f"({', '.join(damaged[:5])}{', ...' if len(damaged) > 5 else ''}); the file is damaged or was saved from "
            "a diverged training run. Use an earlier checkpoint of that run."
        )
    if not (match.ok and not parsed.unsupported) and not force:
        raise LoraMismatchError(_refusal(name, match, parsed.unsupported))
    report = ApplyReport(name, family, match, strength_video, strength_audio, forced=force)
    if not family.family:
        report.notes.append("Note: the base model could not be verified from this file (see family above).")
    parts = []
    for audio in (False, True):
        strength = strength_audio if audio else strength_video
        modules = {n: parsed.modules[n] for n in match.matched if is_audio_stream(n) == audio}
        if modules and strength != 0:
            parts.append(StreamPart(audio, strength, ParsedLora("comfy", modules, [])))
    return report, parts
