"""What a LoRA file is, for people and JSON: its family, layout, ranks, alpha and targeted module groups.

The pieces live beside it: ``modules`` (which layer a module name is), ``family`` (which model a LoRA or checkpoint
is for), ``match`` (how a LoRA fits one model). This module reads a file and builds the report from them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import metadata as md
from .family import FamilyGuess, detect_family
from .layouts import ParsedLora, nonfinite_modules, parse_lora
from .match import MatchReport, match_lora
from .modules import GROUPS, block_index, module_group
from .read import LoraFileError, read_lora_file


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
    nonfinite: list[str] = field(default_factory=list)  # modules holding NaN/Inf

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
        if self.nonfinite:
            lines.append(f"DAMAGED: NaN/Inf values in {len(self.nonfinite)} modules (the checked loader refuses this "
                         f"LoRA; use an earlier checkpoint): {', '.join(self.nonfinite[:8])}"
                         + (f" and {len(self.nonfinite) - 8} more" if len(self.nonfinite) > 8 else ""))
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
    blocks = sorted({b for n in parsed.modules if (b := block_index(n)) is not None})
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
        nonfinite=nonfinite_modules(parsed),
    )



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
