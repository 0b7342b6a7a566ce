"""Turning a probed file into a training sample: bucket choice, short-side resize, crop, 8n+1 trim, fps.

``plan_item(...)`` decides everything from the probe alone (no decoding) and returns a ``ClipPlan`` or the
reason the item cannot be used; ``load_planned_frames(...)`` then decodes exactly the planned window and
returns a float32 tensor ``[F, H, W, 3]`` in 0..1 (ComfyUI's IMAGE layout). Random crops and random trim
starts draw from a ``random.Random`` the caller seeds per item, so a plan is the same on every run.
Source files are only ever read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .buckets import Bucket, choose_bucket, too_short_reason
from .media import MediaInfo, decode_video, load_image

CENTRE_WORDS = {"start": "from the start", "center": "from the centre", "random": "from a random start"}


@dataclass(frozen=True)
class ClipPlan:
    """How one item becomes a sample: scale to ``resize`` (w, h), crop ``crop`` (x, y, w, h), sample frames.

    ``fps`` is the rate frames are sampled at (None for stills); ``start_time`` is where the window starts
    (seconds, in the file's timeline) and ``start_frame`` the same as an index at ``fps``.
    """

    bucket: Bucket
    resize: tuple[int, int]
    crop: tuple[int, int, int, int]
    fps: float | None
    start_time: float
    start_frame: int
    available_frames: int

    def as_dict(self) -> dict:
        """JSON-serializable form (also what a cache can hash to notice a changed preparation)."""
        return {
            "bucket": str(self.bucket),
            "resize": list(self.resize),
            "crop": list(self.crop),
            "fps": self.fps,
            "start_time": round(self.start_time, 6),
            "start_frame": self.start_frame,
        }


def short_side_resize(width: int, height: int, bucket: Bucket) -> tuple[int, int]:
    """The smallest scale of ``width`` x ``height`` (aspect kept) that covers the bucket."""
    scale = max(bucket.width / width, bucket.height / height)
    return max(bucket.width, round(width * scale)), max(bucket.height, round(height * scale))


def _crop_box(resize: tuple[int, int], bucket: Bucket, policy: str, rng: random.Random) -> tuple[int, int, int, int]:
    spare_w, spare_h = resize[0] - bucket.width, resize[1] - bucket.height
    if policy == "random":
        x, y = rng.randint(0, spare_w), rng.randint(0, spare_h)
    else:
        x, y = spare_w // 2, spare_h // 2
    return x, y, bucket.width, bucket.height


def _trim_start(available: int, frames: int, policy: str, rng: random.Random) -> int:
    spare = available - frames
    if policy == "center":
        return spare // 2
    if policy == "random":
        return rng.randint(0, spare)
    return 0


def plan_item(
    info: MediaInfo,
    buckets: tuple[Bucket, ...],
    *,
    target_fps: float | None,
    crop: str,
    trim_start: str,
    rng: random.Random,
) -> ClipPlan | str:
    """The plan for one probed item, or a sentence saying why no bucket fits it."""
    fps = None if info.kind == "image" else (target_fps or info.fps)
    available = info.frames_at(target_fps) if info.kind == "video" else 1
    bucket = choose_bucket(buckets, info.width, info.height, available)
    if bucket is None:
        return f"too short: {too_short_reason(buckets, available, fps)}"
    resize = short_side_resize(info.width, info.height, bucket)
    box = _crop_box(resize, bucket, crop, rng)
    start = _trim_start(available, bucket.frames, trim_start, rng) if bucket.frames > 1 else 0
    start_time = info.start_time + (start / fps if fps else 0.0)
    return ClipPlan(bucket, resize, box, fps, start_time, start, available)


def plan_reference(info: MediaInfo, ref: MediaInfo, plan: ClipPlan, factor: int) -> ClipPlan | str:
    """The IC-LoRA reference's plan: the clip's frames (same start, fps and count) at its bucket / ``factor``.

    The crop window is the clip's, scaled to the reference's resize, so a reference made from the clip (edge map,
    depth, ...) stays aligned with it. Returns why the reference cannot be cut that way instead.
    """
    b = plan.bucket
    bucket = Bucket(b.width // factor, b.height // factor, b.frames)
    if (ref.kind == "image") != (info.kind == "image"):
        return f"is {'an image' if ref.kind == 'image' else 'a video'} but the clip is not; use the same kind"
    needed = plan.start_frame + b.frames
    available = ref.frames_at(plan.fps) if ref.kind == "video" else 1
    if available < needed:
        at = f" at {plan.fps:g} fps" if plan.fps else ""
        return f"has {available} frames{at}, the clip's kept frames need {needed}; make it as long as the clip"
    resize = short_side_resize(ref.width, ref.height, bucket)
    x = min(round(plan.crop[0] * resize[0] / plan.resize[0]), resize[0] - bucket.width)
    y = min(round(plan.crop[1] * resize[1] / plan.resize[1]), resize[1] - bucket.height)
    start_time = ref.start_time + (plan.start_frame / plan.fps if plan.fps else 0.0)
    return ClipPlan(bucket, resize, (x, y, bucket.width, bucket.height), plan.fps, start_time, plan.start_frame,
                    available)


def keep_reference_frames(frames: torch.Tensor, temporal: int) -> torch.Tensor:
    """Frames 0, 1, 1+S, 1+2S, ... of a reference's cut for ``temporal`` S (ltx-trainer's VAE-aligned subsampling:
    (F - 1) / S + 1 of an 8n+1 cut's F frames); all of them for S = 1."""
    return frames if temporal == 1 else frames[[0, *range(1, frames.shape[0], temporal)]]


def describe_changes(info: MediaInfo, plan: ClipPlan, *, target_fps: float | None, crop: str, trim: str) -> list[str]:
    """Plain-English list of what preparation changes relative to the source (empty: used as is)."""
    changes = list(info.notes)
    b = plan.bucket
    if (info.width, info.height) != (b.width, b.height):
        where = "centre" if crop == "center" else f"random window at x={plan.crop[0]}, y={plan.crop[1]}"
        cut = f"cropped ({where}) to {b.width}x{b.height}" if plan.resize != (b.width, b.height) else ""
        if plan.resize == (info.width, info.height):
            changes.append(f"{info.width}x{info.height} {cut}")
        else:
            resized = f"resized {info.width}x{info.height} -> {plan.resize[0]}x{plan.resize[1]}"
            changes.append(f"{resized}, {cut}" if cut else resized)
    if info.kind == "video" and info.frames > 1 and b.frames == 1:
        changes.append(f"video used as a still image: frame {plan.start_frame} only (no video bucket fits)")
    elif info.kind == "video" and info.frames == 1:
        changes.append("one-frame video used as a still image")
    if info.kind == "video" and target_fps and (abs(target_fps - (info.fps or 0)) > 1e-3 or info.variable_frame_rate):
        changes.append(
            f"resampled {info.fps:.3f} -> {target_fps:g} fps by timestamp ({info.frames} -> "
            f"{plan.available_frames} frames)"
        )
    if plan.available_frames > b.frames > 1:
        last = plan.start_frame + b.frames - 1
        changes.append(
            f"trimmed {plan.available_frames} -> {b.frames} frames (8n+1), kept {plan.start_frame}-{last} "
            f"{CENTRE_WORDS[trim]}"
        )
    return changes


def load_planned_frames(path: Path, info: MediaInfo, plan: ClipPlan, limit: int | None = None) -> torch.Tensor:
    """Decode the planned window of ``path``: float32 ``[F, H, W, 3]`` in 0..1 (``limit`` caps F, e.g. 1)."""
    count = plan.bucket.frames if limit is None else min(limit, plan.bucket.frames)
    if info.kind == "image":
        arr = load_image(path, size=plan.resize, crop=plan.crop)
    else:
        arr = decode_video(
            path, info, start_time=plan.start_time, fps=plan.fps, count=count, size=plan.resize, crop=plan.crop
        )
    return torch.from_numpy(arr.astype(np.float32) / 255.0)
