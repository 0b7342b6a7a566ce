"""Probing and decoding of videos (PyAV) and images (Pillow), without ever decoding more than needed.

``probe(path) -> MediaInfo`` reads the container and stream headers and decodes exactly one frame (to prove the
stream decodes and to read the rotation), so a report over many clips costs a few frames per clip. Frame counts
come from the stream header (``nb_frames``) or from the stream duration times the average rate (Matroska and
WebM store no frame count); only a stream with neither is counted by decoding, and ``MediaInfo.decoded_frames``
says how many frames probing decoded.

``MediaInfo.audio`` describes the first audio track from its headers; ``read_audio_window(...)`` decodes the
audio of one time window as stereo float32 at 16 kHz (the audio VAE's input), exactly as long as the window.

``decode_video(...)`` decodes one window of frames: it seeks to the keyframe before the window, picks for each
output time ``start + k / fps`` the frame whose timestamp is nearest (so variable-frame-rate sources and
resampling to another fps use real timestamps), scales each picked frame in libswscale straight to the
requested size (a 4K source never exists in memory as more than one decoded frame) and converts any pixel
format (10-bit, greyscale, ...) to 8-bit RGB. ``load_image(...)`` does the same for stills, honouring EXIF
orientation and flattening transparency onto white. Rotation metadata of videos is applied after scaling.

All errors are ``MediaError`` with a message that names the file and the problem.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS

# Decompression-bomb guard, deliberately ours and in this one place: a still may declare at most this many pixels
# (checked on its header before any pixel is decoded; 12000x10000, more than any camera's full frame). Pillow's own
# process-wide Image.MAX_IMAGE_PIXELS is left alone: inside ComfyUI it is ComfyUI's setting too.
MAX_IMAGE_PIXELS = 120_000_000

_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


class MediaError(UserError, ValueError):
    """A media file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class AudioInfo:
    """The first audio track of a file, from its headers (nothing decoded)."""

    channels: int
    rate: int
    layout: str
    codec: str

    def describe(self) -> str:
        """``"2 ch 44.1 kHz"`` as the dataset report prints it."""
        return f"{self.channels} ch {self.rate / 1000:g} kHz"


@dataclass(frozen=True)
class MediaInfo:
    """What probing learned about one file. Sizes are as displayed (after rotation and pixel aspect)."""

    kind: Literal["video", "image"]
    width: int
    height: int
    frames: int
    fps: float | None = None
    start_time: float = 0.0
    end_time: float = 0.0
    rotation: int = 0
    pixel_format: str = ""
    variable_frame_rate: bool = False
    frame_count_source: str = "header"
    decoded_frames: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    audio: AudioInfo | None = None  # the first audio track (headers only); None: no track, or a still

    @property
    def duration(self) -> float:
        return max(0.0, self.end_time - self.start_time)

    def frames_at(self, fps: float | None) -> int:
        """Frames available when sampled at ``fps`` (None: the file's own rate)."""
        if self.kind == "image" or self.frames <= 1:
            return 1
        if fps is None or self.fps is None or (abs(fps - self.fps) < 1e-3 and not self.variable_frame_rate):
            return self.frames
        return max(1, math.floor(self.duration * fps + 1e-6))


def probe(path: Path) -> MediaInfo:
    """Describe ``path`` cheaply (headers plus one decoded frame); raise ``MediaError`` if it is unusable."""
    ext = path.suffix.lower()
    if ext not in MEDIA_EXTENSIONS:
        raise MediaError(
            f"{path.name}: unsupported file type '{ext}' (videos: {', '.join(VIDEO_EXTENSIONS)}; "
            f"images: {', '.join(IMAGE_EXTENSIONS)})"
        )
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MediaError(f"{path.name}: file not found at {path}") from None
    if size == 0:
        raise MediaError(f"{path.name} is an empty (zero-byte) file; re-export or remove it")
    return _probe_image(path) if ext in IMAGE_EXTENSIONS else _probe_video(path)


def _open_image(path: Path) -> Image.Image:
    """``Image.open`` with the size limit applied to the header; a bomb or unreadable file raises ``MediaError``."""
    limit = (
        f"this pack refuses images above {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels as possible decompression bombs "
        "(trainer_core.dataset.media.MAX_IMAGE_PIXELS): downscale it, or remove it if it is not a real photo"
    )
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as err:  # far above the limit: Pillow refuses it before we see the size
        raise MediaError(f"{path.name} is too large ({err}); {limit}") from None
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        img.close()
        megapixels = width * height / 1e6
        raise MediaError(f"{path.name} declares {width}x{height} pixels ({megapixels:.0f} megapixels); {limit}")
    return img


def _probe_image(path: Path) -> MediaInfo:
    try:
        with _open_image(path) as img:
            img.verify()  # checks structure and checksums without decoding the pixels
        with _open_image(path) as img:
            width, height, mode = img.width, img.height, img.mode
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            transparent = "A" in mode or "transparency" in img.info
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise MediaError(f"{path.name} cannot be read as an image ({err}); the file is corrupt or truncated") from None
    notes = []
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    if orientation not in (0, 1):
        notes.append(f"EXIF orientation {orientation} applied")
    if transparent:
        notes.append(f"{mode} image: transparency flattened onto white")
    elif mode in ("L", "1", "I", "I;16", "F"):
        notes.append(f"greyscale ({mode}) image converted to RGB")
    elif mode not in ("RGB",):
        notes.append(f"{mode} image converted to RGB")
    return MediaInfo(kind="image", width=width, height=height, frames=1, pixel_format=mode, notes=tuple(notes))


def _actual_type(path: Path) -> str | None:
    """What a file that is no video holds, when that is recognisable: ``"plain text"`` or an image format."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    try:
        with Image.open(path) as img:
            return f"a {img.format} image"
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        pass
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "plain text" if text and all(c.isprintable() or c.isspace() for c in text) else None


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.FFmpegError as err:
        actual = _actual_type(path)
        if actual is not None:
            raise MediaError(
                f"{path.name} is not a video: it holds {actual} (the file name's extension is wrong); rename or "
                "remove it"
            ) from None
        raise MediaError(f"{path.name} cannot be opened as a video ({err}); the file is corrupt or truncated") from None


def _stream_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")  # Matroska/WebM write the per-stream duration as a tag
    if tag:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _first_frame(path: Path, container, stream) -> tuple[av.VideoFrame, int]:
    decoded = 0
    try:
        for frame in container.decode(stream):
            decoded += 1
            return frame, decoded
    except av.FFmpegError as err:
        raise MediaError(f"{path.name}: the video stream does not decode ({err}); the file is corrupt") from None
    raise MediaError(
        f"{path.name}: the video stream holds no frames (a zero-frame video, or one cut off before its first frame); "
        "re-export it"
    )


def _count_by_decoding(path: Path, container, stream) -> tuple[int, float]:
    container.seek(0)
    count, last = 0, 0.0
    try:
        for frame in container.decode(stream):
            count += 1
            last = float(frame.time) if frame.time is not None else last
    except av.FFmpegError as err:
        raise MediaError(f"{path.name}: decoding failed after {count} frames ({err}); the file is corrupt") from None
    return count, last


def _data_end(container, stream, expected_end: float) -> float | None:
    """End time of the last packet actually in the file (demuxed near the end, nothing decoded)."""
    container.seek(max(0, int((expected_end - 1.0) / stream.time_base)), stream=stream, backward=True)
    last = None
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                end = float((packet.pts + (packet.duration or 0)) * stream.time_base)
                last = end if last is None else max(last, end)
    except av.FFmpegError:
        pass  # a cut-off file ends in a broken packet: what was read so far is the data end
    return last


def _probe_video(path: Path) -> MediaInfo:
    with _open(path) as container:
        if not container.streams:
            raise MediaError(
                f"{path.name} holds no streams at all: no video frames (a zero-frame or unfinished file); re-export it"
            )
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            raise MediaError(
                f"{path.name} has no video stream (it holds {', '.join(kinds)}); audio-only files cannot be "
                "used for a video LoRA"
            )
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first, decoded = _first_frame(path, container, stream)
        notes = []
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        if fps is None:
            fps = 24.0
            notes.append("frame rate missing from the file; assumed 24 fps")
        vfr = bool(stream.base_rate and stream.average_rate and abs(float(stream.base_rate) / fps - 1) > 0.01)
        start = float(first.time) if first.time is not None else 0.0
        duration = _stream_duration(container, stream)
        frames, source = stream.frames, "header"
        if frames <= 0 and duration:
            frames, source = round(duration * fps), "duration"
        if frames <= 0:
            frames, last = _count_by_decoding(path, container, stream)
            decoded += frames
            duration, source = last - start + 1 / fps, "decoding"
        if not duration:
            duration = frames / fps
        data_end = _data_end(container, stream, start + duration) if source != "decoding" else None
        if data_end is not None and data_end < start + duration - 1.5 / fps:
            present = max(1, math.floor((data_end - start) * fps + 1e-6))
            notes.append(
                f"file ends at {data_end:.2f} s although its header says {start + duration:.2f} s (truncated?): "
                f"using the {present} of {frames} frames present"
            )
            frames, duration, source = present, data_end - start, "data end"
        rotation = round(first.rotation or 0) % 360
        sar = stream.sample_aspect_ratio
        width = round(first.width * float(sar)) if sar and float(sar) > 0 else first.width
        height = first.height
        if rotation in (90, 270):
            width, height = height, width
        pix = first.format.name
        if rotation:
            notes.append(f"rotated {rotation}° as its metadata says")
        if vfr:
            notes.append(f"variable frame rate (average {fps:.3f} fps): frames picked by timestamp")
        if any(d in pix for d in ("10", "12", "16")):
            notes.append(f"{pix} (high bit depth) converted to 8-bit RGB")
        audio = _audio_info(container)
    return MediaInfo(
        kind="video", width=width, height=height, frames=frames, fps=fps, start_time=start,
        end_time=start + duration, rotation=rotation, pixel_format=pix, variable_frame_rate=vfr,
        frame_count_source=source, decoded_frames=decoded, notes=tuple(notes), audio=audio,
    )


def _to_rgb_array(frame: av.VideoFrame, info: MediaInfo, size: tuple[int, int]) -> np.ndarray:
    """Scale ``frame`` so that, once rotated, it is ``size`` (w, h) and return it as uint8 RGB."""
    width, height = size
    if info.rotation in (90, 270):
        width, height = height, width
    rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()
    if info.rotation:
        rgb = np.rot90(rgb, k=info.rotation // 90)  # frame.rotation is counter-clockwise, like np.rot90
    return rgb


def _crop(arr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return np.ascontiguousarray(arr[y : y + h, x : x + w])


def decode_video(
    path: Path,
    info: MediaInfo,
    *,
    start_time: float,
    fps: float,
    count: int,
    size: tuple[int, int],
    crop: tuple[int, int, int, int],
) -> np.ndarray:
    """Decode ``count`` frames sampled at ``fps`` from ``start_time``, scaled to ``size`` then cropped to ``crop``.

    Returns uint8 ``[count, crop_h, crop_w, 3]``. Raises ``MediaError`` when the file ends early or breaks.
    """
    samples = [start_time + k / fps for k in range(count)]
    frame_span = 1.0 / (info.fps or fps)
    out: list[np.ndarray] = []
    prev, prev_t, prev_rgb = None, None, None

    def take_prev() -> None:
        nonlocal prev_rgb
        if prev_rgb is None:
            prev_rgb = _crop(_to_rgb_array(prev, info, size), crop)
        out.append(prev_rgb)

    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start_time > info.start_time + frame_span / 2:
            container.seek(int((start_time - frame_span) / stream.time_base), stream=stream, backward=True)
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else (prev_t or 0.0) + frame_span
                while prev is not None and len(out) < count and samples[len(out)] < (prev_t + t) / 2:
                    take_prev()
                if len(out) == count:
                    break
                prev, prev_t, prev_rgb = frame, t, None
        except av.FFmpegError as err:
            raise MediaError(
                f"{path.name}: decoding failed after {len(out)} of {count} frames ({err}); the file is corrupt"
            ) from None
        while prev is not None and len(out) < count and samples[len(out)] < prev_t + frame_span - 1e-6:
            take_prev()
    if len(out) < count:
        raise MediaError(
            f"{path.name}: only {len(out)} of {count} frames could be decoded from {start_time:.2f} s; the file "
            "is shorter than its header says (truncated?)"
        )
    return np.stack(out)


def _image_to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode != "F" else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if "A" in img.mode:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: Path, *, size: tuple[int, int], crop: tuple[int, int, int, int]) -> np.ndarray:
    """Load a still scaled to ``size`` (w, h, after EXIF orientation) and cropped: uint8 ``[1, h, w, 3]``."""
    try:
        with _open_image(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(size), max(size)))  # decode large JPEGs at a reduced scale
            upright = ImageOps.exif_transpose(img)
            rgb = _image_to_rgb(upright).resize(size, Image.Resampling.BICUBIC)
    except (UnidentifiedImageError, OSError) as err:
        raise MediaError(f"{path.name} cannot be decoded as an image ({err}); the file is corrupt") from None
    return _crop(np.asarray(rgb), crop)[None]


AUDIO_RATE = 16000  # what LTX-2.x's audio VAE takes (trainer_core.cache.encoders.AUDIO_SAMPLE_RATE)
_MINUS_3DB = 0.7071067811865476
# ITU-R BS.775 downmix: centre and surrounds into both sides at -3 dB, LFE dropped; each output row is then
# divided by its sum (as ffmpeg's default matrix is normalised), so a full-scale source cannot clip.
_DOWNMIX_LEFT = {"FL": 1.0, "FC": _MINUS_3DB, "SL": _MINUS_3DB, "BL": _MINUS_3DB, "FLC": _MINUS_3DB, "BC": 0.5}
_DEFAULT_LAYOUTS = {3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
_DOWNMIX_RIGHT = {"FR": 1.0, "FC": _MINUS_3DB, "SR": _MINUS_3DB, "BR": _MINUS_3DB, "FRC": _MINUS_3DB, "BC": 0.5}


@dataclass(frozen=True)
class AudioClip:
    """One window of a file's audio: float32 ``[2, samples]`` at 16 kHz, plus what the source track was."""

    waveform: np.ndarray
    source_channels: int
    source_rate: int

    @property
    def sample_rate(self) -> int:
        return AUDIO_RATE


def _audio_info(container) -> AudioInfo | None:
    if not container.streams.audio:
        return None
    ctx = container.streams.audio[0].codec_context
    return AudioInfo(channels=ctx.channels, rate=ctx.sample_rate, layout=ctx.layout.name, codec=ctx.name)


def probe_audio(path: Path) -> AudioInfo | None:
    """The first audio track's channels and rate from the headers, or None when the file has none."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return None
    with _open(path) as container:
        return _audio_info(container)


def _to_stereo(samples: np.ndarray, names: list[str]) -> np.ndarray:
    """``[C, N]`` in the named channel order -> ``[2, N]``: mono duplicated, stereo kept, surround downmixed."""
    if samples.shape[0] == 1:
        return np.repeat(samples, 2, axis=0)
    if samples.shape[0] == 2:
        return samples
    if not any(name in _DOWNMIX_LEFT for name in names) and samples.shape[0] in _DEFAULT_LAYOUTS:
        # an unnamed layout ("6 channels", e.g. PCM in Matroska) is in FFmpeg's default order for its count
        names = [c.name for c in av.AudioLayout(_DEFAULT_LAYOUTS[samples.shape[0]]).channels]
    if not any(name in _DOWNMIX_LEFT for name in names):  # still unknown: plain average per side
        half = samples.shape[0] // 2
        return np.stack([samples[:half].mean(0), samples[half:].mean(0)])
    rows = []
    for table in (_DOWNMIX_LEFT, _DOWNMIX_RIGHT):
        weights = np.array([table.get(name, 0.0) for name in names], dtype=np.float64)
        rows.append((weights / weights.sum()) @ samples)
    return np.stack(rows).astype(np.float32)


def read_audio_window(path: Path, start_s: float, duration_s: float) -> AudioClip | None:
    """Decode the audio of ``[start_s, start_s + duration_s)`` as stereo float32 at 16 kHz, or None without a track.

    The result has exactly ``round(duration_s * 16000)`` samples: cut at the window, zero-padded where the track
    starts late or ends early. Times are the file's own timestamps (as ``MediaInfo.start_time``). Decoding seeks
    to just before the window, so a long file costs only its window. Raises ``MediaError`` naming the file when
    the audio track does not decode.
    """
    want = round(duration_s * AUDIO_RATE)
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        source_channels, source_rate = ctx.channels, ctx.sample_rate
        names = [c.name for c in ctx.layout.channels]
        if start_s > 1.0 and stream.time_base is not None:
            container.seek(int((start_s - 1.0) / stream.time_base), stream=stream, backward=True)
        resampler = av.AudioResampler(format="fltp", layout=ctx.layout.name, rate=AUDIO_RATE)
        chunks: list[np.ndarray] = []
        first_t: float | None = None
        end_s = start_s + duration_s
        try:
            for frame in container.decode(stream):
                if first_t is None:
                    first_t = float(frame.time) if frame.time is not None else 0.0
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
                if frame.time is not None and float(frame.time) > end_s + 0.1:
                    break
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        except (av.FFmpegError, ValueError) as err:
            raise MediaError(f"{path.name}: the audio track does not decode ({err}); the file is corrupt") from None
    channels = len(names) or source_channels
    decoded = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    offset = round((start_s - (first_t or 0.0)) * AUDIO_RATE)
    window = np.zeros((decoded.shape[0], want), np.float32)
    src_from, dst_from = max(0, offset), max(0, -offset)
    take = max(0, min(want - dst_from, decoded.shape[1] - src_from))
    window[:, dst_from : dst_from + take] = decoded[:, src_from : src_from + take]
    waveform = np.ascontiguousarray(_to_stereo(window, names), dtype=np.float32)
    return AudioClip(waveform=waveform, source_channels=source_channels, source_rate=source_rate)
