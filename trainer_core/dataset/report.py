"""The dataset report: per item ``ok`` / ``adjusted`` (what changed) / ``excluded`` (why), caption findings and
cross-caption vocabulary hints, as a JSON-serializable dict (``build_report``) or as text (``report_text``).

Nothing here decodes frames: the report is built from probes and plans only.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .loader import PreparedDataset
from .media import MediaInfo


def build_report(ds: PreparedDataset) -> dict[str, Any]:
    """The report as plain data (``json.dumps``-able)."""
    items = []
    for it in ds.items:
        items.append({
            "id": it.id,
            "source": str(it.source),
            "status": it.status,
            "kind": it.info.kind,
            "source_size": [it.info.width, it.info.height],
            "source_frames": it.info.frames,
            "source_fps": it.info.fps,
            "bucket": str(it.bucket),
            "fps": it.fps,
            "audio": _audio_text(it.info, ds.config.skip_audio),
            "reference": it.reference_rel,
            "reference_bucket": None if it.reference_plan is None else str(it.reference_plan.bucket),
            "changes": list(it.adjustments),
            "caption": it.caption,
            "caption_findings": list(it.caption_findings),
        })
    for ex in ds.excluded:
        items.append({"id": ex.id, "source": str(ex.source), "status": "excluded", "reason": ex.reason})
    statuses = Counter(i["status"] for i in items)
    return {
        "path": str(ds.config.path),
        "root": str(ds.root),
        "format": ds.kind,
        "settings": ds.config.model_dump(mode="json"),
        "summary": {
            "total": len(items),
            "ok": statuses["ok"],
            "adjusted": statuses["adjusted"],
            "excluded": statuses["excluded"],
            "buckets": dict(Counter(str(i.bucket) for i in ds.items)),
            "caption_findings": sum(len(i.caption_findings) for i in ds.items),
            "with_audio": _with_audio(ds),
            "without_audio": len(ds.items) - _with_audio(ds),
            "with_reference": sum(i.reference is not None for i in ds.items),
        },
        "items": items,
        "vocabulary": [v.as_dict() for v in ds.vocabulary],
        "ignored_files": list(ds.ignored_files),
    }


def _audio_text(info: MediaInfo, skip: bool) -> str:
    if info.kind == "image":
        return "still image (no audio)"
    text = f"audio: {info.audio.describe()}" if info.audio is not None else "no audio track"
    return f"{text}, skipped (skip_audio)" if skip else text


def _with_audio(ds: PreparedDataset) -> int:
    return sum(1 for i in ds.items if i.info.audio is not None and i.info.kind != "image")


def audio_line(ds: PreparedDataset) -> str:
    """``"N clips with audio, M without"`` (and whether audio is skipped)."""
    with_audio = _with_audio(ds)
    line = f"{with_audio} clips with audio, {len(ds.items) - with_audio} without an audio track"
    return f"{line} (audio skipped: skip_audio is on)" if ds.config.skip_audio else line


def reference_line(ds: PreparedDataset) -> str | None:
    """``"N clips with a reference video (...), M without"``; None when no clip has one."""
    n = sum(i.reference is not None for i in ds.items)
    if not n:
        return None
    factor, s = ds.config.reference_downscale_factor, ds.config.reference_temporal_scale_factor
    frames = "" if s == 1 else f", every {s}th frame after the first"
    return (f"{n} clips with a reference video (IC-LoRA, cut with the clip's frames at 1/{factor} of its width and "
            f"height{frames}), {len(ds.items) - n} without")


def summary_line(ds: PreparedDataset) -> str:
    """One line: counts per status and per bucket."""
    adjusted = sum(1 for i in ds.items if i.status == "adjusted")
    buckets = Counter(str(i.bucket) for i in ds.items)
    per_bucket = ", ".join(f"{b}: {n}" for b, n in sorted(buckets.items())) or "none"
    return (
        f"{len(ds.items)} usable ({len(ds.items) - adjusted} ok, {adjusted} adjusted), {len(ds.excluded)} excluded; "
        f"buckets {per_bucket}"
    )


def report_text(ds: PreparedDataset) -> str:
    """The report as readable text."""
    lines = [f"Dataset {ds.config.path} ({ds.kind}, root {ds.root})", summary_line(ds), audio_line(ds)]
    lines += [line for line in (reference_line(ds),) if line] + [""]
    for it in ds.items:
        fps = f" @ {it.fps:g} fps" if it.fps else ""
        ref = "" if it.reference_plan is None else f"; reference {it.reference_rel} -> {it.reference_plan.bucket}"
        lines.append(f"[{it.status}] {it.id} -> {it.bucket}{fps}; {_audio_text(it.info, ds.config.skip_audio)}{ref}")
        lines += [f"    - {c}" for c in it.adjustments]
        lines += [f"    ! caption: {f}" for f in it.caption_findings]
    for ex in ds.excluded:
        lines += [f"[excluded] {ex.id}", f"    - {ex.reason}"]
    if ds.vocabulary:
        lines += ["", "Caption vocabulary (hints):"]
        lines += [f"  - {v.message}" for v in ds.vocabulary]
    if ds.ignored_files:
        lines += ["", f"Ignored (not media or captions): {', '.join(ds.ignored_files)}"]
    return "\n".join(lines)
