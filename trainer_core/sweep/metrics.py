"""The sweep's numbers: how far each LoRA row moves the output away from the base row.

For every cell, ``change`` is the RMS pixel difference (0..1 scale, all frames) between the cell's video and
the base row's video of the same prompt and seed: same noise, same prompt, only the LoRA differs. Averaged per
row over the trigger prompts it is the **effect** (the LoRA does something when asked to); over the prompts
without the trigger it is the **bleed** (the LoRA leaks into unrelated prompts). ``score = effect - bleed``
ranks LoRAs and checkpoints: a LoRA that does nothing scores 0, one that changes everything alike scores ~0,
one that responds to its trigger and leaves other prompts alone scores high. Cheap (no extra model), and only a
companion to looking at the grid: it cannot tell a good change from a broken one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .plan import SweepError, SweepPlan, Variant


@dataclass(frozen=True)
class RowScore:
    variant: Variant
    effect: float | None  # mean change over trigger prompts (None: the sweep has no trigger prompt)
    bleed: float | None  # mean change over prompts without the trigger (None: none in the sweep)

    @property
    def score(self) -> float:
        return (self.effect or 0.0) - (self.bleed or 0.0)

    def text(self) -> str:
        def f(v: float | None) -> str:
            return "  n/a " if v is None else f"{v:.4f}"

        return f"effect {f(self.effect)}  bleed {f(self.bleed)}  score {self.score:+.4f}"


@dataclass
class SweepScores:
    changes: list[float | None]  # per cell; None for base cells
    rows: list[RowScore]  # per non-base row

    def ranking(self) -> list[tuple[str, float]]:
        """LoRA files ranked by their mean score over the swept non-zero strengths, best first."""
        per_file: dict[str, list[float]] = {}
        for r in self.rows:
            per_file.setdefault(r.variant.lora.name, []).append(r.score)
        means = [(name, sum(v) / len(v)) for name, v in per_file.items()]
        return sorted(means, key=lambda x: x[1], reverse=True)

    def table(self) -> str:
        """A plain-text table: one line per LoRA row, then the ranking."""
        if not self.rows:
            return "no LoRA rows to score"
        width = max(len(r.variant.label) for r in self.rows)
        lines = [f"{'row':<{width}}  effect  bleed   score", *(
            f"{r.variant.label:<{width}}  {r.text()}" for r in self.rows
        ), "", "ranking (mean score over strengths):"]
        lines += [f"{i}. {name}  {score:+.4f}" for i, (name, score) in enumerate(self.ranking(), start=1)]
        return "\n".join(lines)


def rms_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """RMS difference of two videos ``[T, H, W, C]`` (IMAGE values 0..1)."""
    if a.shape != b.shape:
        raise SweepError(
            f"cells differ in size ({tuple(a.shape)} vs {tuple(b.shape)}): render every cell with the same "
            "latent size and length to compare them"
        )
    return math.sqrt(float(((a.double() - b.double()) ** 2).mean()))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_sweep(plan: SweepPlan, videos: Sequence[torch.Tensor]) -> SweepScores:
    """Per-cell changes against the base row and per-row effect/bleed; needs strength 0 in the sweep."""
    if len(videos) != len(plan.cells):
        raise SweepError(
            f"the grid got {len(videos)} images for a sweep of {len(plan.cells)} cells: connect the decoded "
            "output of the sampler chain fed by the sweep node (one image batch per cell)"
        )
    if not plan.has_base:
        raise SweepError("the sweep has no strength 0 (base) row, so there is nothing to compare against")
    base = {c.column: videos[c.index] for c in plan.cells if c.variant.lora is None}
    changes: list[float | None] = [
        None if c.variant.lora is None else rms_change(videos[c.index], base[c.column]) for c in plan.cells
    ]
    rows = []
    for r, variant in enumerate(plan.variants):
        if variant.lora is None:
            continue
        cells = [c for c in plan.cells if c.row == r]
        by_kind = {
            kind: [changes[c.index] for c in cells if plan.prompts[c.prompt].kind == kind]
            for kind in ("trigger", "other")
        }
        rows.append(RowScore(variant, _mean(by_kind["trigger"]), _mean(by_kind["other"])))
    return SweepScores(changes, rows)
