"""What a LoRA file is: its model family, ranks, alpha, targeted module groups, and how it fits a given model.

The family comes from our metadata (``ltxlora.base_model``) when present, otherwise from structure. Structure
can only tell families apart where their module sets or shapes differ, and the report says so when they
do not: LTX-2 (19B) and LTX-2.3 (22B) attention layers have the same names and widths (video 4096, audio
2048), so a LoRA on q/k/v/out alone fits both. What does differ: LTX-2.3 (and 2.5) add ``to_gate_logits``
and ``prompt_adaln_single`` layers; LTX-2 keeps ``caption_projection`` inside the transformer; LTXV 0.9.x
has no audio modules and its 2B model is 2048 wide with 28 blocks (the 13B one is 4096 wide with 48).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import metadata as md
from .layouts import ParsedLora, parse_lora
from .read import LoraFileError, read_lora_file

NOT_LTX = "not-ltx"
FAMILY_NAMES = {
    md.FAMILY_LTX2: "LTX-2 (19B)",
    md.FAMILY_LTX23: "LTX-2.3 (22B)",
    md.FAMILY_LTX25: "LTX-2.5",
    md.FAMILY_LTXV09: "LTXV 0.9.x",
    NOT_LTX: "not an LTX model",
}
_AV_FAMILIES = (md.FAMILY_LTX2, md.FAMILY_LTX23, md.FAMILY_LTX25)
_GATED_FAMILIES = (md.FAMILY_LTX23, md.FAMILY_LTX25)
_RELEASED_WIDTHS = {"video": 4096, "audio": 2048}

_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")
_BLOCK_SUBMODULES = re.compile(
    r"^(attn1|attn2|audio_attn1|audio_attn2|audio_to_video_attn|video_to_audio_attn)"
    r"\.(to_q|to_k|to_v|to_out\.0|to_gate_logits)$"
    r"|^(ff|audio_ff)\.net\.(0\.proj|2)$"
)
_TOP_LEVEL = re.compile(
    r"^(audio_)?(patchify_proj|proj_out|caption_projection\.linear_[12]"
    r"|(prompt_)?adaln_single\.(linear|emb\.timestep_embedder\.linear_[12]))$"
    r"|^av_ca_(a2v_gate|v2a_gate|audio_scale_shift|video_scale_shift)_adaln_single\.(linear|emb\.timestep_embedder\.linear_[12])$"
)

GROUPS = ("video_attention", "audio_attention", "cross_modal_attention", "video_ffn", "audio_ffn", "other")


def module_group(module: str) -> str:
    """The group of an LTX module: video/audio/cross-modal attention, video/audio FFN, or other."""
    found = _BLOCK.match(module)
    sub = found.group(2) if found else module
    if sub.startswith(("audio_to_video_attn.", "video_to_audio_attn.")):
        return "cross_modal_attention"
    if sub.startswith(("audio_attn1.", "audio_attn2.")):
        return "audio_attention"
    if sub.startswith(("attn1.", "attn2.")):
        return "video_attention"
    if sub.startswith("audio_ff."):
        return "audio_ffn"
    if sub.startswith("ff."):
        return "video_ffn"
    return "other"


def is_audio_stream(module: str) -> bool:
    """Whether ``module`` writes into the audio stream (audio strength applies) rather than the video one.

    A cross-modal attention belongs to the stream its output is added to: ``video_to_audio_attn`` updates the
    audio tokens, ``audio_to_video_attn`` the video tokens; likewise for the AdaLN tables that modulate them.
    """
    found = _BLOCK.match(module)
    sub = found.group(2) if found else module
    if sub.startswith("audio_to_video_attn."):
        return False
    return sub.startswith(("audio_", "video_to_audio_attn.", "av_ca_audio_", "av_ca_v2a_"))


def is_ltx_module(module: str) -> bool:
    """Whether ``module`` is a Linear layer name of an LTX transformer (any version)."""
    found = _BLOCK.match(module)
    return bool(_BLOCK_SUBMODULES.match(found.group(2))) if found else bool(_TOP_LEVEL.match(module))


@dataclass
class FamilyGuess:
    """The model family a LoRA (or model) belongs to; several candidates when structure cannot decide."""

    candidates: tuple[str, ...]
    source: str  # "metadata" or "structure"
    reason: str

    @property
    def family(self) -> str | None:
        """The family when it is certain, else None."""
        return self.candidates[0] if len(self.candidates) == 1 else None

    def describe(self) -> str:
        names = " or ".join(FAMILY_NAMES.get(c, c) for c in self.candidates)
        certainty = "" if self.family else " (cannot be told apart from this file)"
        return f"{names}{certainty}, from {self.source}: {self.reason}"


def _stream_width(parsed: ParsedLora, attn: str) -> int | None:
    for name, m in parsed.modules.items():
        found = _BLOCK.match(name)
        if found and found.group(2) in (f"{attn}.to_q", f"{attn}.to_k", f"{attn}.to_v"):
            return int(m.down.shape[1])
    return None


def family_from_structure(parsed: ParsedLora) -> FamilyGuess:
    """Guess the family from module names and widths alone."""
    names = list(parsed.modules)
    ltx = [n for n in names if is_ltx_module(n)]
    if not ltx:
        sample = ", ".join(names[:3])
        return FamilyGuess((NOT_LTX,), "structure", f"no LTX transformer module among its targets (e.g. {sample})")
    subs = {(_BLOCK.match(n).group(2) if _BLOCK.match(n) else n) for n in ltx}
    has_audio = any(is_audio_stream(n) or module_group(n) == "cross_modal_attention" for n in ltx)
    video = _stream_width(parsed, "attn1")
    width_note = ""
    if video is not None and video != _RELEASED_WIDTHS["video"] and video != 2048:
        width_note = f"; its video width {video} matches no released model (a test or custom model)"
    if any(".to_gate_logits" in s or s.startswith(("prompt_adaln_single", "audio_prompt_adaln_single")) for s in subs):
        return FamilyGuess(
            _GATED_FAMILIES,
            "structure",
            "it targets gated-attention / prompt-AdaLN layers, which only LTX-2.3 and later have; 2.3 and 2.5 share "
            "them" + width_note,
        )
    caption = any(s.startswith(("caption_projection.", "audio_caption_projection.")) for s in subs)
    if has_audio and caption:
        return FamilyGuess(
            (md.FAMILY_LTX2,),
            "structure",
            "audio modules plus a caption projection inside the transformer (LTX-2 layout)" + width_note,
        )
    if has_audio:
        return FamilyGuess(
            _AV_FAMILIES,
            "structure",
            "audio+video modules that LTX-2, 2.3 and 2.5 share with identical names and widths; without our metadata "
            "the base model cannot be told from the file" + width_note,
        )
    if video == 2048:
        return FamilyGuess((md.FAMILY_LTXV09,), "structure", "video-only, 2048 wide (LTXV 0.9.x 2B)")
    candidates = (md.FAMILY_LTXV09, md.FAMILY_LTX2) if caption else (md.FAMILY_LTXV09, *_AV_FAMILIES)
    return FamilyGuess(
        candidates,
        "structure",
        "video-only modules; LTXV 0.9.x 13B and the video stream of LTX-2.x share names and widths" + width_note,
    )


def detect_family(parsed: ParsedLora, metadata: Mapping[str, str]) -> FamilyGuess:
    """Our ``ltxlora.base_model`` metadata when present and valid, else ``family_from_structure``."""
    declared = metadata.get(md.BASE_MODEL)
    if declared in md.FAMILIES:
        return FamilyGuess((declared,), "metadata", f"{md.BASE_MODEL} = {declared}")
    return family_from_structure(parsed)


def model_family(weight_names: Iterable[str]) -> FamilyGuess:
    """The family of a model from its diffusion-model weight names (no ``diffusion_model.`` prefix)."""
    names = set(weight_names)
    if not any(n.startswith("transformer_blocks.") for n in names) or "patchify_proj.weight" not in names:
        return FamilyGuess((NOT_LTX,), "structure", "no LTX transformer weights")
    if "audio_adaln_single.linear.weight" not in names:
        return FamilyGuess((md.FAMILY_LTXV09,), "structure", "no audio stream")
    if "keyframes_abs_pos_embedding" in names:
        return FamilyGuess((md.FAMILY_LTX25,), "structure", "keyframe position embedding (LTX-2.5)")
    if any(n.endswith(".to_gate_logits.weight") for n in names):
        return FamilyGuess((md.FAMILY_LTX23,), "structure", "gated attention (LTX-2.3)")
    return FamilyGuess((md.FAMILY_LTX2,), "structure", "audio+video without gated attention (LTX-2)")


@dataclass
class ModuleInfo:
    name: str
    group: str
    rank: int
    alpha: float | None
    in_features: int
    out_features: int
    dtype: str


@dataclass
class LoraReport:
    """Everything inspection found; ``text()`` for people, ``to_dict()`` for JSON."""

    layout: str
    family: FamilyGuess
    modules: list[ModuleInfo]
    unsupported: list[str]
    metadata: dict[str, str]
    groups: dict[str, int] = field(default_factory=dict)
    ranks: dict[int, int] = field(default_factory=dict)
    alphas: dict[str, int] = field(default_factory=dict)
    blocks: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["family"] = {"family": self.family.family, **asdict(self.family)}
        return out

    def text(self) -> str:
        lines = [
            f"Layout: {self.layout}",
            f"Family: {self.family.describe()}",
            f"Modules: {len(self.modules)} in blocks {_ranges(self.blocks) or 'none'}",
            "Targets: " + ", ".join(f"{g.replace('_', ' ')} {n}" for g, n in self.groups.items()),
            "Rank: " + ", ".join(f"{r} ({n} modules)" for r, n in sorted(self.ranks.items())),
            "Alpha: " + ", ".join(f"{a} ({n})" for a, n in self.alphas.items()),
        ]
        if self.unsupported:
            lines.append(f"Not plain LoRA (ignored by conversion): {len(self.unsupported)} keys")
        if md.AUDIO in self.metadata or md.VIDEO in self.metadata:
            video, audio = self.metadata.get(md.VIDEO, "not recorded"), self.metadata.get(md.AUDIO, "not recorded")
            lines.append(f"Trained streams: video {video}, audio {audio}")
        reference = {k: self.metadata[k] for k in md.REFERENCE_KEYS if k in self.metadata}
        if reference:  # read by ComfyUI's Get IC-LoRA Parameters and ltx-pipelines
            lines.append("IC-LoRA: " + ", ".join(f"{k} = {v}" for k, v in reference.items()))
        ours = {k: v for k, v in self.metadata.items() if k.startswith("ltxlora.") and k != md.TRAINING_CONFIG}
        lines += [f"  {k} = {v}" for k, v in sorted(ours.items())]
        return "\n".join(lines)


def _ranges(values: list[int]) -> str:
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ",".join(parts)


def inspect_lora(parsed: ParsedLora, metadata: Mapping[str, str]) -> LoraReport:
    """Inspect a parsed LoRA (see ``layouts.parse_lora``) with its file's metadata."""
    infos = [
        ModuleInfo(
            name,
            module_group(name),
            m.rank,
            m.alpha,
            int(m.down.shape[1]),
            int(m.up.shape[0]),
            str(m.up.dtype).removeprefix("torch."),
        )
        for name, m in parsed.modules.items()
    ]
    blocks = sorted({int(b.group(1)) for n in parsed.modules if (b := _BLOCK.match(n))})
    groups = Counter(i.group for i in infos)
    return LoraReport(
        layout=parsed.layout,
        family=detect_family(parsed, metadata),
        modules=infos,
        unsupported=parsed.unsupported,
        metadata=dict(metadata),
        groups={g: groups[g] for g in GROUPS if groups[g]},
        ranks=dict(Counter(i.rank for i in infos)),
        alphas=dict(Counter("none (scale 1)" if i.alpha is None else f"{i.alpha:g}" for i in infos)),
        blocks=blocks,
    )


@dataclass
class MatchReport:
    """How a LoRA fits one model: what ComfyUI would apply, skip, or fail on."""

    model_family: FamilyGuess
    matched: list[str]
    missing: list[str]  # no such layer in the model: ComfyUI logs "lora key not loaded" and skips it
    shape_mismatch: list[str]  # the layer exists with another shape: ComfyUI logs an error and skips it
    family_conflict: str | None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.shape_mismatch or self.family_conflict)

    def text(self) -> str:
        total = len(self.matched) + len(self.missing) + len(self.shape_mismatch)
        lines = [f"Model: {self.model_family.describe()}", f"Matching layers: {len(self.matched)} of {total}"]
        return "\n".join(lines + [f"PROBLEM: {p}" for p in self.problems()])

    def problems(self) -> list[str]:
        out = [self.family_conflict] if self.family_conflict else []
        for label, keys in (
            ("not in the model (would be skipped)", self.missing),
            ("shape differs from the model's", self.shape_mismatch),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                out.append(f"{len(keys)} LoRA modules {label}: {shown}")
        return out


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
    conflict = None
    if target.family and target.family not in family.candidates:
        conflict = (
            f"this LoRA is for {' or '.join(FAMILY_NAMES.get(c, c) for c in family.candidates)} "
            f"({family.source}: {family.reason}) but the model is {FAMILY_NAMES[target.family]}"
        )
    return MatchReport(target, matched, missing, mismatch, conflict)


def match_lora(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], model_weights: Mapping[str, torch.Size]
) -> tuple[ParsedLora, FamilyGuess, MatchReport]:
    """Parse a LoRA against a model's layer names (``{weight name without diffusion_model.: shape}``), tell its
    family and how it fits that model: what ComfyUI would apply, skip or fail on."""
    parsed = parse_lora(tensors, module_names=[k.removesuffix(".weight") for k in model_weights])
    family = detect_family(parsed, metadata)
    return parsed, family, match_model(parsed, family, model_weights)


def report_text(report: LoraReport, match: MatchReport | None = None) -> str:
    """The report (and optional model match) for people."""
    return report.text() if match is None else f"{report.text()}\n{match.text()}"


def report_json(report: LoraReport, match: MatchReport | None = None) -> str:
    """The report (and optional model match) as JSON."""
    out = report.to_dict()
    if match is not None:
        out["model"] = {**asdict(match), "ok": match.ok}
    return json.dumps(out, indent=2, default=str)


def inspect_file(
    path: str | os.PathLike, model_weights: Mapping[str, torch.Size] | None = None
) -> tuple[LoraReport, MatchReport | None]:
    """Read and inspect a LoRA file and, given a model's weight shapes, match it against that model (else None).

    ``LoraFileError`` names the file when it is unusable.
    """
    tensors, metadata = read_lora_file(path)
    try:
        if model_weights is None:
            parsed, match = parse_lora(tensors), None
        else:
            parsed, _, match = match_lora(tensors, metadata, model_weights)
    except LoraFileError as err:
        raise LoraFileError(f"{path}: {err}") from None
    return inspect_lora(parsed, metadata), match


def checkpoint_weight_shapes(path: str | os.PathLike, prefix: str = "model.diffusion_model.") -> dict[str, torch.Size]:
    """``{weight name: shape}`` of the diffusion model in a single-file checkpoint, read from the header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = [k for k in fh.keys() if k.startswith(prefix)]  # noqa: SIM118 - safe_open is not a mapping
            shapes = {k[len(prefix) :]: torch.Size(fh.get_slice(k).get_shape()) for k in keys}
    except (OSError, SafetensorError) as err:
        raise LoraFileError(f"Cannot read the model checkpoint {path}: {err}") from None
    if not shapes:
        raise LoraFileError(f"{path} has no '{prefix}*' weights; give a single-file LTX checkpoint")
    return shapes
