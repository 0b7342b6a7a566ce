"""Planning a strength sweep: which LoRA files, strengths, prompts and seeds, and the cells they make.

A sweep is a grid: one row per *variant* (the base model, then every LoRA at every non-zero strength) and one
column per (prompt, seed). Strength 0 is the base model for every LoRA, so it is rendered once (the "base" row)
instead of once per LoRA: the numbers compare every other row with it. Cells are ordered row by row; that is
the order of the lists the sweep node emits and of the images the grid node receives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config.sweep import DEFAULT_STRENGTHS
from ..engine.checkpoints import list_checkpoints
from ..errors import UserError

PromptKind = Literal["trigger", "other"]
NO_PROMPTS = "no prompts: connect with_trigger and/or without_trigger conditioning, or a CLIP and prompt lines"


class SweepError(UserError, ValueError):
    """The sweep's inputs are invalid or too large; the message says which input and what to do."""


@dataclass(frozen=True)
class SweepPrompt:
    """One prompt column group: its conditioning (opaque here), a short label and whether it has the trigger."""

    label: str
    kind: PromptKind
    conditioning: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Variant:
    """One row: the base model (``lora is None``) or a LoRA file at a strength."""

    lora: Path | None
    strength: float

    @property
    def label(self) -> str:
        return "base" if self.lora is None else f"{self.lora.stem} @ {self.strength:g}"


@dataclass(frozen=True)
class Cell:
    index: int
    row: int
    column: int
    variant: Variant
    prompt: int
    seed: int
    label: str


@dataclass
class SweepPlan:
    """Everything the grid and the numbers need to know about a sweep (travels on the LTX_SWEEP socket)."""

    variants: list[Variant]
    prompts: list[SweepPrompt]
    seeds: list[int]
    cells: list[Cell]

    @property
    def columns(self) -> int:
        return len(self.prompts) * len(self.seeds)

    @property
    def has_base(self) -> bool:
        return any(v.lora is None for v in self.variants)

    def describe(self) -> str:
        """A short text: counts, rows and columns (shown in the node before the samplers run)."""
        lines = [
            f"{len(self.cells)} cells = {len(self.variants)} rows x {len(self.prompts)} prompts x "
            f"{len(self.seeds)} seeds",
            "rows: " + ", ".join(v.label for v in self.variants),
            "prompts: " + "; ".join(f"[{p.kind}] {p.label}" for p in self.prompts),
            "seeds: " + ", ".join(str(s) for s in self.seeds),
        ]
        if not self.has_base:
            lines.append("no strength 0 in the sweep: the effect/bleed numbers need the base row")
        return "\n".join(lines)


def parse_numbers(text: str, what: str, kind: type = float) -> list:
    """Comma/space separated numbers, duplicates dropped, order kept; errors name the input and the bad item."""
    values: list = []
    for item in text.replace(";", ",").replace(" ", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = kind(item)
        except ValueError:
            raise SweepError(f"{what}: {item!r} is not a number (write e.g. '{DEFAULT_STRENGTHS}')") from None
        if kind is float and not math.isfinite(value):
            raise SweepError(f"{what}: {item!r} is not a finite number")
        if value not in values:
            values.append(value)
    if not values:
        raise SweepError(f"{what} is empty: give at least one value, e.g. '{DEFAULT_STRENGTHS}'")
    return values


def _find(entry: str, search_dirs: Sequence[Path], confined: bool = False, within: bool = False) -> Path:
    path = Path(entry).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [d / path for d in search_dirs]
    if confined or within:  # only what lies in a search folder, symlinks followed
        inside = [c for c in candidates if any(c.resolve().is_relative_to(d.resolve()) for d in search_dirs)]
        if within and not confined and not inside:
            where = ", ".join(str(d) for d in search_dirs) or "(no LoRA folders)"
            raise SweepError(
                f"loras: {entry!r} lies outside the LoRA folders ({where}); the node reads LoRAs only from there: "
                "copy or move the file into models/loras, or give its name there"
            )
        candidates = inside
    for candidate in candidates:
        if candidate.exists():
            return candidate
    where = ", ".join(str(d) for d in search_dirs) or "(no LoRA folders)"
    raise SweepError(f"loras: {entry!r} was not found (absolute path, or a name under {where})")


def resolve_lora_files(
    spec: str, search_dirs: Sequence[Path] = (), confined: bool = False, within: bool = False
) -> list[Path]:
    """LoRA files from a comma-separated list of files and/or checkpoint folders.

    A folder contributes its ``<name>_step_NNNNN.safetensors`` checkpoints in step order (or, when it holds
    none, every ``.safetensors`` file in it except training-state files). Relative names are looked up in
    ``search_dirs`` (ComfyUI's ``loras`` folders). ``within`` (the node): an entry outside every search folder
    (absolute, ``..`` or a symlink out) is refused with a message naming it. ``confined`` (the HTTP route): such an
    entry gets the very message of a missing one, so an HTTP caller learns nothing about other folders.
    """
    files: list[Path] = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        path = _find(entry, search_dirs, confined, within)
        if path.is_dir():
            found = [p for _, p in list_checkpoints(path)] or sorted(
                p for p in path.glob("*.safetensors") if not p.name.endswith(".state.safetensors")
            )
            if not found:
                raise SweepError(f"loras: the folder {path} holds no .safetensors LoRA files")
            files += found
        else:
            files.append(path)
    if not files:
        raise SweepError("loras is empty: give LoRA files (comma-separated) or a folder of checkpoints")
    return list(dict.fromkeys(files))


def cell_count(n_loras: int, strengths: Sequence[float], n_prompts: int, n_seeds: int) -> int:
    """Cells of a sweep: the base row once (if 0 is among the strengths) plus each LoRA at each other strength."""
    rows = (1 if 0 in strengths else 0) + n_loras * sum(1 for s in strengths if s != 0)
    return rows * n_prompts * n_seeds


def check_limit(count: int, max_cells: int) -> None:
    if count > max_cells:
        raise SweepError(
            f"this sweep has {count} cells, more than max_cells = {max_cells}: use fewer LoRA files, strengths, "
            "prompts or seeds, or raise max_cells if you really want to render them all"
        )


def parse_seeds(text: str) -> list[int]:
    """Seeds from a comma-separated text; errors name the input (samplers take seeds >= 0)."""
    seeds = parse_numbers(text, "seeds", int)
    if any(s < 0 for s in seeds):
        raise SweepError(f"seeds: {seeds} holds a negative seed; samplers take seeds >= 0")
    return seeds


def prompt_count(n_conditioning: int, n_lines: int, clip: bool) -> int:
    """Prompts of a sweep: its conditioning inputs plus its prompt lines, which need a CLIP to encode them."""
    if n_lines and not clip:
        raise SweepError("prompts has text lines but no CLIP is connected to encode them: connect the LTX CLIP")
    if n_conditioning + n_lines == 0:
        raise SweepError(NO_PROMPTS)
    return n_conditioning + n_lines


def count_cells(
    loras: str,
    strengths: str,
    seeds: str,
    max_cells: int,
    *,
    n_conditioning: int,
    clip: bool,
    prompts: str = "",
    trigger: str = "",
    search_dirs: Sequence[Path] = (),
    confined: bool = False,
    within: bool = False,
) -> int:
    """Cells the sweep node's widget values make; raises SweepError where queueing the node would be refused.

    The node's ``validate_inputs`` and the editor's live count (``GET /ltxlora/sweep_count``) both call this, so
    the editor shows what queueing accepts. ``n_conditioning`` is the number of linked conditioning inputs,
    ``clip`` whether a CLIP is linked; ``search_dirs`` are ComfyUI's ``loras`` folders. ``within`` (the node): LoRA
    entries outside them are refused by name; ``confined`` (the route): they read as not found (``resolve_lora_files``).
    """
    files = resolve_lora_files(loras, search_dirs, confined, within)
    values = parse_numbers(strengths, "strengths")
    n_seeds = len(parse_seeds(seeds))
    n_prompts = prompt_count(n_conditioning, len(prompt_lines(prompts, trigger)), clip)
    count = cell_count(len(files), values, n_prompts, n_seeds)
    check_limit(count, max_cells)
    return count


def plan_sweep(
    loras: Sequence[Path],
    strengths: Sequence[float],
    prompts: Sequence[SweepPrompt],
    seeds: Sequence[int],
    max_cells: int,
) -> SweepPlan:
    """The cells of a sweep, row by row; refuses more than ``max_cells`` before anything is loaded."""
    if not prompts:
        raise SweepError(NO_PROMPTS)
    check_limit(cell_count(len(loras), strengths, len(prompts), len(seeds)), max_cells)
    variants = [Variant(None, 0.0)] if 0 in strengths else []
    variants += [Variant(Path(f), float(s)) for f in loras for s in strengths if s != 0]
    cells = []
    for row, variant in enumerate(variants):
        for p, prompt in enumerate(prompts):
            for k, seed in enumerate(seeds):
                label = f"{variant.label} | {prompt.kind}: {prompt.label} | seed {seed}"
                cells.append(Cell(len(cells), row, p * len(seeds) + k, variant, p, int(seed), label))
    return SweepPlan(list(variants), list(prompts), [int(s) for s in seeds], cells)


def prompt_lines(text: str, trigger: str) -> list[tuple[str, PromptKind]]:
    """Non-empty lines of ``text``; a line containing ``trigger`` (case-insensitive) is a trigger prompt.

    Without a trigger word every line counts as a trigger prompt (no bleed number then).
    """
    out: list[tuple[str, PromptKind]] = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            kind: PromptKind = "trigger" if not trigger.strip() or trigger.strip().lower() in line.lower() else "other"
            out.append((line, kind))
    return out


def short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
