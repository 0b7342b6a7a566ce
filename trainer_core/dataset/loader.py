"""``load_dataset(cfg) -> PreparedDataset``: list, probe, plan and check captions, decoding nothing yet.

Every usable item is a ``PreparedItem`` described from its probe alone; ``item.load_frames()`` decodes just its
planned window when called, so a report over 100 clips stays cheap and a cache step can go item by item.
Unusable entries become ``ExcludedItem`` with a reason naming the file and the problem; one bad item never
stops the load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ConfigError
from ..config.dataset import DatasetConfig
from .buckets import Bucket, parse_buckets
from .captions import VocabularyFinding, apply_trigger, caption_findings, vocabulary_findings
from .media import MEDIA_EXTENSIONS, AudioClip, MediaError, MediaInfo, probe, read_audio_window
from .prepare import ClipPlan, describe_changes, keep_reference_frames, load_planned_frames, plan_item, plan_reference
from .sources import SourceEntry, list_sources

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedItem:
    """One usable sample, described cheaply. ``id`` is stable: the path relative to the dataset root.

    The cache step needs: ``id``, ``source`` (absolute path), ``source_size`` / ``source_mtime_ns`` (to notice a
    changed file), ``caption`` (trigger included), ``bucket`` (W, H, F), ``fps`` (after resampling; None for
    stills) and ``load_frames()``; ``fingerprint`` hashes all of that except the caption. IC-LoRA: ``reference``
    is the reference video, ``reference_plan`` its cut (the clip's frames at bucket / reference_downscale_factor)
    and ``load_reference_frames()`` decodes it; ``reference_key`` changes when its file or cut does.
    """

    id: str
    source: Path
    source_size: int
    source_mtime_ns: int
    caption: str
    original_caption: str | None
    info: MediaInfo
    plan: ClipPlan
    adjustments: tuple[str, ...] = ()
    caption_findings: tuple[str, ...] = ()
    reference: Path | None = None
    reference_rel: str | None = None
    reference_info: MediaInfo | None = None
    reference_plan: ClipPlan | None = None
    reference_temporal: int = 1  # reference_temporal_scale_factor S: frames 0, 1, 1+S, ... of the cut are kept

    @property
    def bucket(self) -> Bucket:
        return self.plan.bucket

    @property
    def fps(self) -> float | None:
        return self.plan.fps

    @property
    def status(self) -> str:
        return "adjusted" if self.adjustments else "ok"

    @property
    def fingerprint(self) -> str:
        """sha256 of the source identity and the preparation plan: equal means the same frames."""
        key = {"id": self.id, "size": self.source_size, "mtime_ns": self.source_mtime_ns, **self.plan.as_dict()}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def load_frames(self) -> torch.Tensor:
        """The prepared frames: float32 ``[F, H, W, 3]`` in 0..1 (F, H, W = the bucket). Raises ``MediaError``."""
        return load_planned_frames(self.source, self.info, self.plan)

    @property
    def reference_key(self) -> str | None:
        """sha256 of the reference's identity (path, size, mtime) and cut; None without a reference."""
        if self.reference is None or self.reference_plan is None:
            return None
        stat = self.reference.stat()
        key = {"path": str(self.reference), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
               **self.reference_plan.as_dict()}
        if self.reference_temporal != 1:  # only then, so caches made before the setting existed stay valid
            key["temporal"] = self.reference_temporal
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def load_reference_frames(self) -> torch.Tensor:
        """The reference's frames cut with the clip's plan: float32 ``[F_r, H/N, W/N, 3]``, F_r = F with no temporal
        factor, else frames 0, 1, 1+S, 1+2S, ... (ltx-trainer's VAE-aligned subsampling). Raises ``MediaError``."""
        if self.reference is None or self.reference_info is None or self.reference_plan is None:
            raise ValueError(f"{self.id} has no reference video")
        frames = load_planned_frames(self.reference, self.reference_info, self.reference_plan)
        return keep_reference_frames(frames, self.reference_temporal)

    def first_frame(self) -> torch.Tensor:
        """Only the first prepared frame, ``[1, H, W, 3]`` (for previews)."""
        return load_planned_frames(self.source, self.info, self.plan, limit=1)

    @property
    def audio_duration(self) -> float | None:
        """Seconds of audio that go with the frames (F / fps), or None for stills and clips without audio."""
        if self.info.audio is None or self.info.kind == "image" or not self.plan.fps:
            return None
        return self.plan.bucket.frames / self.plan.fps

    def load_audio(self) -> AudioClip | None:
        """The audio of the planned window ``[start_time, start_time + F / fps)``: stereo float32 ``[2, samples]``
        at 16 kHz, ``samples = round(F / fps * 16000)``; None for stills and clips without an audio track (the
        caller decides about ``DatasetConfig.skip_audio``). Raises ``MediaError`` if the track does not decode."""
        duration = self.audio_duration
        if duration is None:
            return None
        return read_audio_window(self.source, self.plan.start_time, duration)


@dataclass(frozen=True)
class ExcludedItem:
    """An entry that cannot be used and why (``reason`` names the file and the problem)."""

    id: str
    source: Path
    reason: str
    caption: str | None = None


@dataclass
class PreparedDataset:
    """The whole dataset: usable ``items`` (lazy frames), ``excluded`` entries, and cross-caption findings."""

    config: DatasetConfig
    root: Path
    kind: str
    items: list[PreparedItem] = field(default_factory=list)
    excluded: list[ExcludedItem] = field(default_factory=list)
    vocabulary: list[VocabularyFinding] = field(default_factory=list)
    ignored_files: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def require_items(self) -> None:
        """Raise ``ConfigError`` naming the folder and every excluded entry with its reason when none is usable."""
        if self.items:
            return
        if not self.excluded:
            found = f"; found only {', '.join(self.ignored_files[:10])}" if self.ignored_files else ""
            raise ConfigError(
                f"dataset {self.root} holds no media files ({', '.join(MEDIA_EXTENSIONS)}){found}: point the dataset "
                "path at the folder of clips, or at its dataset.json/.jsonl/.csv"
            )
        shown = self.excluded[:_LISTED]
        more = f"\n  ... and {len(self.excluded) - len(shown)} more" if len(self.excluded) > len(shown) else ""
        raise ConfigError(
            f"dataset {self.root} has no usable item: all {len(self.excluded)} entries were excluded:\n  "
            + "\n  ".join(f"{e.id}: {e.reason}" for e in shown) + more
            + "\nFix or replace those files (the dataset report lists each reason), or use another dataset"
        )


_LISTED = 20  # excluded entries named in the empty-dataset error; the dataset report lists them all


def _item_rng(seed: int, item_id: str) -> random.Random:
    return random.Random(f"{seed}:{item_id}")  # str seeds hash with sha512: stable across runs and orders


def _prepare_entry(entry: SourceEntry, cfg: DatasetConfig, buckets: tuple[Bucket, ...]) -> PreparedItem | ExcludedItem:
    if entry.problem:
        return ExcludedItem(entry.rel, entry.path, entry.problem, entry.caption)
    try:
        info = probe(entry.path)
    except MediaError as err:
        return ExcludedItem(entry.rel, entry.path, str(err), entry.caption)
    except OSError as err:  # unreadable (permissions, a vanished network share): this entry only
        return ExcludedItem(entry.rel, entry.path, f"{entry.rel} cannot be read ({err.strerror or err})", entry.caption)
    plan = plan_item(
        info, buckets, target_fps=cfg.target_fps, crop=cfg.crop, trim_start=cfg.trim_start,
        rng=_item_rng(cfg.seed, entry.rel),
    )
    if isinstance(plan, str):
        return ExcludedItem(entry.rel, entry.path, f"{entry.rel}: {plan}", entry.caption)
    reference: dict = {}
    if entry.reference is not None:
        where = f"{entry.rel}: reference video {entry.reference_rel}"
        try:
            ref_info = probe(entry.reference)
        except MediaError as err:
            return ExcludedItem(entry.rel, entry.path, f"{where} is unusable ({err}); fix or replace it", entry.caption)
        ref_plan = plan_reference(info, ref_info, plan, cfg.reference_downscale_factor)
        if isinstance(ref_plan, str):
            return ExcludedItem(entry.rel, entry.path, f"{where} {ref_plan}", entry.caption)
        reference = {"reference": entry.reference, "reference_rel": entry.reference_rel, "reference_info": ref_info,
                     "reference_plan": ref_plan, "reference_temporal": cfg.reference_temporal_scale_factor}
    caption = apply_trigger(entry.caption, cfg.trigger)
    stat = entry.path.stat()
    changes = describe_changes(info, plan, target_fps=cfg.target_fps, crop=cfg.crop, trim=cfg.trim_start)
    findings = caption_findings(entry.caption, caption, cfg.trigger, cfg.caption_token_budget, entry.caption_origin)
    return PreparedItem(
        id=entry.rel, source=entry.path, source_size=stat.st_size, source_mtime_ns=stat.st_mtime_ns,
        caption=caption, original_caption=entry.caption, info=info, plan=plan,
        adjustments=tuple(changes), caption_findings=tuple(findings), **reference,
    )


def load_dataset(cfg: DatasetConfig) -> PreparedDataset:
    """List, probe and plan every entry of ``cfg.path``; ``ConfigError`` only if the dataset itself is unreadable."""
    listing = list_sources(cfg.path, cfg.references_dir)
    buckets = parse_buckets(cfg.buckets)
    ds = PreparedDataset(cfg, listing.root, listing.kind, ignored_files=listing.ignored)
    for entry in listing.entries:
        result = _prepare_entry(entry, cfg, buckets)
        if isinstance(result, ExcludedItem):
            logger.info("excluded %s: %s", result.id, result.reason)
            ds.excluded.append(result)
        else:
            ds.items.append(result)
    ds.vocabulary = vocabulary_findings({i.id: i.original_caption or "" for i in ds.items}, cfg.trigger)
    return ds
