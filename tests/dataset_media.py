"""Synthetic media for the dataset tests, written with PyAV and Pillow into temporary folders.

Frame ``i`` of a generated video is a flat grey of level ``level(i)`` (with a red block in the top-left corner
of the coded picture) so a test can tell which source frame a decoded frame came from.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
from PIL import Image

CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}
STEP = 4


def level(i: int) -> int:
    """Grey level of source frame ``i``."""
    return (16 + i * STEP) % 240


def frame_index(frame: np.ndarray) -> int:
    """Source frame index recovered from a decoded float frame [H, W, 3] (mean of its lower-right quarter)."""
    h, w = frame.shape[:2]
    grey = float(frame[h // 2 :, w // 2 :].mean()) * 255.0
    return round((grey - 16) / STEP)


def write_video(
    path: Path,
    frames: int = 30,
    size: tuple[int, int] = (96, 64),
    fps: int = 24,
    pix_fmt: str = "yuv420p",
    codec: str | None = None,
    rotation: int | None = None,
    frame_times_ms: list[int] | None = None,
    audio: bool = False,
) -> Path:
    """Write a test video; ``frame_times_ms`` makes it variable-frame-rate with those timestamps."""
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec or CODECS[path.suffix], rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if stream.codec_context.name == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "12"}
        else:
            stream.bit_rate = 8_000_000  # high enough that the grey level of each frame survives
        if frame_times_ms is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if audio:
            a_stream = out.add_stream("aac", rate=16000)
        for i in range(frames):
            arr = np.full((height, width, 3), level(i), np.uint8)
            arr[: height // 4, : width // 4] = (255, 0, 0)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            if frame_times_ms is not None:
                frame.pts, frame.time_base = frame_times_ms[i], fractions.Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if audio:
            _write_tone(out, a_stream)
    return path


def _write_tone(out, stream, seconds: float = 0.5) -> None:
    samples = np.sin(np.linspace(0, 440 * 2 * np.pi * seconds, int(16000 * seconds))).astype(np.float32)
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, len(samples) - chunk + 1, chunk):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + chunk], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def write_audio_only(path: Path) -> Path:
    """A container holding only an AAC audio track."""
    with av.open(str(path), "w") as out:
        _write_tone(out, out.add_stream("aac", rate=16000))
    return path


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (96, 64), exif_orientation: int = 0) -> Path:
    """A still: left half dark, right half light (alpha 0 on the left for RGBA/LA)."""
    width, height = size
    arr = np.full((height, width, 3), 200, np.uint8)
    arr[:, : width // 2] = 40
    img = Image.fromarray(arr)
    if mode in ("RGBA", "LA"):
        alpha = np.full((height, width), 255, np.uint8)
        alpha[:, : width // 2] = 0
        base = img.convert("L") if mode == "LA" else img
        img = Image.merge(mode, (*base.split(), Image.fromarray(alpha)))
    elif mode == "I;16":
        img = Image.fromarray((np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype("<u2"))
    elif mode != "RGB":
        img = img.convert(mode)
    kwargs = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    img.save(path, **kwargs)
    return path


def write_inverted_copy(source: Path, path: Path) -> Path:
    """A colour-inverted re-encode of ``source`` at its size and rate: a stand-in IC-LoRA reference (control) video."""
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        in_stream = src.streams.video[0]
        stream = out.add_stream(CODECS[path.suffix], rate=in_stream.average_rate)
        stream.width, stream.height, stream.pix_fmt = in_stream.width, in_stream.height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "12"}
        for frame in src.decode(in_stream):
            inverted = 255 - frame.to_ndarray(format="rgb24")
            out.mux(stream.encode(av.VideoFrame.from_ndarray(inverted, format="rgb24")))
        out.mux(stream.encode())
    return path
