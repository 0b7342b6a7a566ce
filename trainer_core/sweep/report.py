"""Turn a sweep's decoded results into what the grid node shows: layout, numbers and table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .grid import GridLayout, as_video
from .metrics import SweepScores, score_sweep
from .plan import SweepPlan, short


@dataclass
class SweepReport:
    videos: list[torch.Tensor]
    layout: GridLayout
    table: str
    scores: SweepScores | None = None


def _plan_layout(plan: SweepPlan, scores: SweepScores | None) -> GridLayout:
    by_variant = {r.variant: r for r in scores.rows} if scores else {}
    rows = [
        v.label + ("" if v not in by_variant else "\n" + by_variant[v].text().replace("  ", "\n", 2))
        for v in plan.variants
    ]
    columns = [f"{p.kind}: {short(p.label, 60)} | seed {s}" for p in plan.prompts for s in plan.seeds]
    notes = (
        ["base" if c is None else f"change {c:.4f}" for c in scores.changes] if scores else []
    )
    return GridLayout(plan.columns, (), notes, rows, columns)


def sweep_report(
    images: Sequence[torch.Tensor], labels: Sequence[str], plan: SweepPlan | None = None, columns: int = 0
) -> SweepReport:
    """Grid layout and numbers for ``images`` (one IMAGE per cell, in the sweep's order).

    With the sweep's plan the grid has one row per variant and one column per prompt and seed, and the numbers
    (see ``metrics``) are computed when the sweep has a base row; without it the cells are laid out in order
    with their labels in ``columns`` columns (0 = about square).
    """
    videos = [as_video(i) for i in images]
    if plan is None:
        cols = columns or max(1, math.ceil(math.sqrt(len(videos))))
        return SweepReport(videos, GridLayout(cols, list(labels)), "no sweep input connected: no numbers")
    scores = score_sweep(plan, videos) if plan.has_base else None
    table = scores.table() if scores else "the sweep has no strength 0 (base) row: no numbers"
    return SweepReport(videos, _plan_layout(plan, scores), table, scores)
