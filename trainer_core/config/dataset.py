"""Settings of dataset loading and clip preparation (``DatasetConfig``) and of the two small dataset tools.

``DatasetConfig`` is the single source of the *Load LTX Training Dataset* node's widgets, the
``python -m trainer_core dataset`` options and the ``dataset:`` section of a YAML config.

Default buckets: ``768x448x49`` (landscape), ``448x768x49`` (portrait) and ``576x576x49`` (square), each also
with ``F=1`` for still images. 768x448 is the 16:9-ish size whose sides are multiples of 32 (aspect 1.71);
at 49 frames (about 2 s at 25 fps) a clip is 24x14x7 = 2,352 latent tokens, which trains on 24-32 GB cards
with gradient checkpointing, while 960x544x49 (ltx-trainer's example, 3,570 tokens) needs more. The portrait
and square buckets keep phone clips and square images from being cropped to a sliver of their frame.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from .base import Section, knob

DEFAULT_BUCKETS = "768x448x49;448x768x49;576x576x49;768x448x1;448x768x1;576x576x1"

CropPolicy = Literal["center", "random"]
TrimStartPolicy = Literal["start", "center", "random"]
TrimFramesPolicy = Literal["first", "centre", "last"]


class DatasetConfig(Section):
    """Where the clips are and how each becomes a training sample (bucket, crop, trim, fps, caption)."""

    path: str = knob(
        "",
        "Dataset folder (clips or images with same-named .txt captions) or an ltx-trainer manifest "
        "(dataset.json, .jsonl or .csv with a 'video' or 'media_path' column and a 'caption' column). "
        "A folder holding a dataset.json/.jsonl/.csv uses that manifest. IC-LoRA: a manifest's "
        "'reference_video' (or legacy 'ref_media_path') column names each clip's reference (control) video.",
    )
    trigger: str = knob(
        "",
        "Trigger word put once at the start of every caption (left as is where the caption already has it). "
        "Empty = no trigger.",
    )
    buckets: str = knob(
        DEFAULT_BUCKETS,
        "Resolution buckets 'WxHxF;WxHxF;...': width and height multiples of 32, frames 8n+1 (1, 9, 17, 25, "
        "33, 41, 49, ... 121); F=1 buckets take still images. Each clip goes to the bucket closest in aspect "
        "ratio, then with the most frames it can fill.",
    )
    target_fps: float | None = knob(
        None,
        "Resample every video to this frame rate using frame timestamps (variable-frame-rate sources "
        "included). 0 / unset = keep each clip's own rate.",
        gt=0,
        le=240,
    )
    crop: CropPolicy = knob(
        "center",
        "After resizing the short side to the bucket, crop the centre or a random (seeded) window.",
    )
    trim_start: TrimStartPolicy = knob(
        "start",
        "Which frames a clip longer than its bucket keeps: from the start, the centre, or a random (seeded) "
        "start.",
    )
    seed: int = knob(0, "Seed of the random crop and trim choices (each clip gets its own stable draw).", ge=0,
                     le=2**31 - 1)
    caption_token_budget: int = knob(
        1024,
        "Text-encoder token budget: captions estimated longer than this are reported (LTX-2.3's Gemma "
        "features are cut at 1,024 tokens).",
        ge=16,
        le=8192,
    )
    skip_audio: bool = knob(
        False,
        "Ignore the clips' audio tracks: cache and train video only. Off = each clip's audio (the first track, "
        "cut to the clip's frames, resampled to 16 kHz stereo) is encoded with the checkpoint's audio VAE.",
    )

    references_dir: str = knob(
        "",
        "IC-LoRA: folder of reference (control) videos, e.g. depth, pose or edge maps, one per clip with the "
        "clip's file name stem (clip_001.mp4 -> clip_001.mp4 or clip_001.mkv there); a relative path is taken from "
        "the dataset folder. A clip without one is excluded. Empty = none (a manifest's 'reference_video' column "
        "also gives references).",
    )
    reference_downscale_factor: int = knob(
        1,
        "IC-LoRA: each reference is cut with its clip's frames and sized to the clip's bucket divided by this "
        "(2 = half width and height: a quarter of the reference tokens). Every bucket's width and height divided "
        "by it must stay multiples of 32.",
        ge=1,
        le=8,
    )

    reference_temporal_scale_factor: int = knob(
        1,
        "IC-LoRA, headless only: keep the reference's frames 0, 1, 1+S, 1+2S, ... of the clip's (ltx-trainer's "
        "--reference-temporal-scale-factor; the LoRA file records it for ltx-pipelines). Every video bucket's "
        "frames - 1 must be a multiple of 8 x S. ComfyUI v0.33's Get IC-LoRA Parameters and LTXV Add Guide cannot "
        "place such a reference, so the nodes do not offer it and the Train node refuses such data.",
        ge=1,
        le=8,
        widget=False,
    )

    @model_validator(mode="after")
    def _check_reference_factor(self) -> DatasetConfig:
        from ..dataset.buckets import SPATIAL_MULTIPLE, parse_buckets

        n, s = self.reference_downscale_factor, self.reference_temporal_scale_factor
        for b in parse_buckets(self.buckets):
            if b.frames > 1 and (b.frames - 1) % (8 * s):
                raise ValueError(
                    f"reference_temporal_scale_factor {s} does not fit bucket {b}: its {b.frames} frames - 1 must be a "
                    f"multiple of 8 x {s} so that the subsampled reference is 8n+1 frames; pick bucket frames such as "
                    f"{8 * s + 1} or {16 * s + 1}, or another factor"
                )
            if b.width % (n * SPATIAL_MULTIPLE) or b.height % (n * SPATIAL_MULTIPLE):
                raise ValueError(
                    f"reference_downscale_factor {n} does not fit bucket {b}: {b.width}/{n} x {b.height}/{n} must be "
                    f"multiples of 32; pick a factor that divides both sides into multiples of 32, or change the "
                    "bucket"
                )
        return self

    @field_validator("buckets")
    @classmethod
    def _check_buckets(cls, value: str) -> str:
        from ..dataset.buckets import parse_buckets

        parse_buckets(value)  # raises ValueError naming the bad part
        return value.strip()

    @field_validator("trigger")
    @classmethod
    def _strip_trigger(cls, value: str) -> str:
        return value.strip()


class TrimFramesConfig(Section):
    """The *Trim Frames to 8n+1* tool."""

    policy: TrimFramesPolicy = knob(
        "first",
        "Which frames to keep when cutting the batch down to 8n+1: the first ones, the centre ones, or the last "
        "ones.",
    )


class ContactSheetConfig(Section):
    """The *Dataset Preview* contact sheet."""

    columns: int = knob(6, "Tiles per row of the contact sheet.", ge=1, le=16)
    tile_width: int = knob(256, "Width of one tile in pixels (the first frame is fitted inside).", ge=64, le=1024)
    max_items: int = knob(60, "Show at most this many items (the rest are counted in the title).", ge=1, le=500)
