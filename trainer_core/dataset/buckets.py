"""Resolution buckets: parsing ``"WxHxF;WxHxF"`` and choosing the best bucket for a clip.

LTX-2.3's VAE compresses 32x in space and 8x in time with a causal first frame, so a bucket needs width and
height that are multiples of 32 and ``F = 8n + 1`` frames. The choice follows ltx-trainer
(``_get_resolution_bucket_for_item``): only buckets with ``F <=`` the clip's available frames, then the
smallest ``|log(bucket aspect) - log(clip aspect)|``, then more frames, then more area. One deliberate
difference: a multi-frame video is never reduced to a still image while the list has video buckets (F > 1);
a clip too short for all of them is excluded with the reason instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SPATIAL_MULTIPLE = 32
TEMPORAL_MULTIPLE = 8


@dataclass(frozen=True)
class Bucket:
    """One training shape: width and height in pixels, frames (8n+1; 1 for images)."""

    width: int
    height: int
    frames: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}x{self.frames}"

    @property
    def aspect(self) -> float:
        return self.width / self.height


def is_8n1(frames: int) -> bool:
    """True for frame counts LTX-2.3 accepts: 1, 9, 17, 25, ..."""
    return frames >= 1 and (frames - 1) % TEMPORAL_MULTIPLE == 0


def floor_8n1(frames: int) -> int:
    """The largest 8n+1 count not above ``frames`` (0 when ``frames`` < 1)."""
    return 0 if frames < 1 else (frames - 1) // TEMPORAL_MULTIPLE * TEMPORAL_MULTIPLE + 1


def _parse_one(part: str) -> Bucket:
    pieces = part.lower().split("x")
    if len(pieces) != 3 or not all(p.strip().isdigit() for p in pieces):
        raise ValueError(f"bucket {part!r} is not WxHxF (three whole numbers, e.g. 768x448x49)")
    w, h, f = (int(p) for p in pieces)
    problems = []
    if w < SPATIAL_MULTIPLE or w % SPATIAL_MULTIPLE:
        problems.append(f"width {w} is not a positive multiple of 32 (try {max(32, round(w / 32) * 32)})")
    if h < SPATIAL_MULTIPLE or h % SPATIAL_MULTIPLE:
        problems.append(f"height {h} is not a positive multiple of 32 (try {max(32, round(h / 32) * 32)})")
    if not is_8n1(f):
        problems.append(f"frames {f} is not 8n+1 (try {max(1, floor_8n1(f))})")
    if problems:
        raise ValueError(f"bucket {part!r}: " + "; ".join(problems))
    return Bucket(w, h, f)


def parse_buckets(text: str) -> tuple[Bucket, ...]:
    """Parse ``"WxHxF;WxHxF"``; raise ``ValueError`` naming each bad bucket and the nearest valid value."""
    parts = [p.strip() for p in text.replace(",", ";").split(";") if p.strip()]
    if not parts:
        raise ValueError("no buckets given; write at least one as WxHxF, e.g. 768x448x49")
    errors, buckets = [], []
    for part in parts:
        try:
            bucket = _parse_one(part)
        except ValueError as err:
            errors.append(str(err))
            continue
        if bucket not in buckets:
            buckets.append(bucket)
    if errors:
        raise ValueError("; ".join(errors))
    return tuple(buckets)


def choose_bucket(buckets: tuple[Bucket, ...], width: int, height: int, frames: int) -> Bucket | None:
    """The best bucket for a ``width`` x ``height`` item with ``frames`` available frames, or None.

    ``frames == 1`` means a still image (or a one-frame video): only F=1 buckets fit.
    """
    candidates = [b for b in buckets if b.frames <= frames]
    if frames > 1 and any(b.frames > 1 for b in buckets):
        candidates = [b for b in candidates if b.frames > 1]
    if not candidates:
        return None
    log_aspect = math.log(width / height)
    return min(candidates, key=lambda b: (abs(math.log(b.aspect) - log_aspect), -b.frames, -b.width * b.height))


def too_short_reason(buckets: tuple[Bucket, ...], frames: int, fps: float | None = None) -> str:
    """Why no bucket fits an item with ``frames`` frames (sampled at ``fps``), naming a bucket that would."""
    if frames <= 1:
        return "it is a single frame and the buckets have no F=1 (image) bucket; add one such as 768x448x1"
    shortest = min((b for b in buckets if b.frames > 1), key=lambda b: b.frames)
    rate = f" at {fps:g} fps" if fps else ""
    fit = floor_8n1(frames)
    hint = f"; add a bucket such as {shortest.width}x{shortest.height}x{fit} to keep it" if fit > 1 else ""
    return f"{frames} frames{rate} is shorter than the shortest video bucket ({shortest}){hint}"
