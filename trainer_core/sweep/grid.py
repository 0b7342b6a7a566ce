"""Labelled sweep grids: a still image (first, middle and last frame per cell) and a grid video (mp4, PyAV).

Cells are videos in ComfyUI's IMAGE layout ``[T, H, W, C]`` (values 0..1). Each cell becomes a tile scaled to
``tile_height``; tiles are laid out in ``columns`` with optional row and column headers (the sweep's variants
and prompt/seed pairs) and a note line under each tile (the cell's number).

With sound (one ``AudioTrack`` per cell) the grid video plays the cells one after another, each with its own
audio track, the playing cell framed and the others on their first frame: sounds played at once could not be
told apart. ``cell_videos`` writes one mp4 per cell with its sound for listening to a cell alone.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_path

PAD = 4
AUDIO_CHANNELS = 2  # the grid's AAC track is stereo: mono cells are duplicated
LINE = 12  # px per text line of PIL's default bitmap font
HEADER_WIDTH = 170  # left column with the row labels



def check_prefix(prefix: str, out_dir: str | Path) -> str:
    """``prefix`` (a file name prefix, may hold subfolders) when it stays inside ``out_dir``; else ``SweepError``.

    ComfyUI refuses such a prefix too, but with a bare ``Exception``; this names the setting and the fix."""
    from .plan import SweepError

    base = Path(out_dir).resolve()
    if Path(prefix).is_absolute() or not (base / prefix).resolve().is_relative_to(base):
        raise SweepError(
            f"filename_prefix {prefix!r} leaves ComfyUI's output folder ({base}): give a name, optionally with "
            "subfolders under it, e.g. ltx_sweep/grid"
        )
    return prefix

@dataclass(frozen=True)
class GridLayout:
    """What to write around the tiles. ``cell_labels`` and ``notes`` go under each tile (one per cell)."""

    columns: int
    cell_labels: Sequence[str]
    notes: Sequence[str] = ()
    row_labels: Sequence[str] = ()
    column_labels: Sequence[str] = ()


@dataclass(frozen=True)
class AudioTrack:
    """One cell's sound: ``waveform`` ``[channels, samples]`` (values -1..1) at ``sample_rate`` Hz."""

    waveform: torch.Tensor
    sample_rate: int


def as_audio(audio: dict) -> AudioTrack:
    """ComfyUI's AUDIO (``{"waveform": [B, C, S], "sample_rate": int}``) as one track, batch items in sequence."""
    wave = audio["waveform"].detach().float().cpu()
    if wave.ndim != 3:
        raise ValueError(f"expected an AUDIO waveform [batch, channels, samples], got shape {tuple(wave.shape)}")
    return AudioTrack(torch.cat(list(wave), dim=-1), int(audio["sample_rate"]))


def _fitted(track: AudioTrack, samples: int) -> torch.Tensor:
    """``track`` as ``[2, samples]``: mono duplicated, cut or zero-padded to the cell's video length."""
    wave = track.waveform
    if wave.shape[0] == 1:
        wave = wave.expand(AUDIO_CHANNELS, -1)
    elif wave.shape[0] != AUDIO_CHANNELS:
        raise ValueError(f"a cell's audio has {wave.shape[0]} channels; the grid video takes mono or stereo")
    out = torch.zeros(AUDIO_CHANNELS, samples)
    n = min(samples, wave.shape[1])
    out[:, :n] = wave[:, :n]
    return out.clamp(-1, 1)


def key_frames(video: torch.Tensor) -> list[int]:
    """Indices of the first, middle and last frame (one index for a single image)."""
    t = video.shape[0]
    return [0] if t == 1 else [0, t // 2, t - 1]


def as_video(image: torch.Tensor) -> torch.Tensor:
    """An IMAGE ``[T, H, W, C]`` or a VAE decode ``[B, T, H, W, C]`` as one video ``[T, H, W, 3]`` on the CPU."""
    if image.ndim == 5:
        image = image.reshape(-1, *image.shape[-3:])
    if image.ndim != 4:
        raise ValueError(f"expected an IMAGE [frames, H, W, C], got shape {tuple(image.shape)}")
    image = image.detach().float().cpu()
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return image[..., :3].clamp(0, 1)


def _to_pil(frame: torch.Tensor, height: int) -> Image.Image:
    img = Image.fromarray((frame.numpy() * 255 + 0.5).astype(np.uint8))
    width = max(1, round(img.width * height / img.height))
    return img.resize((width, height), Image.Resampling.BILINEAR)


def _text_lines(text: str, width_px: int) -> list[str]:
    chars = max(8, width_px // 6)
    return [line for part in text.split("\n") for line in (textwrap.wrap(part, chars) or [""])]


class _Canvas:
    """Geometry of a grid of equally sized tiles, with header space and text under each tile."""

    def __init__(self, layout: GridLayout, tile_w: int, tile_h: int, count: int) -> None:
        self.layout, self.tile_w, self.tile_h = layout, tile_w, tile_h
        self.rows = -(-count // layout.columns)
        label_lines = max((len(_text_lines(t, tile_w)) for t in layout.cell_labels), default=0)
        self.caption_lines = label_lines + (1 if layout.notes else 0)
        self.left = HEADER_WIDTH if layout.row_labels else 0
        head_lines = max((len(_text_lines(t, tile_w)) for t in layout.column_labels), default=0)
        self.top = head_lines * LINE + PAD if layout.column_labels else 0
        self.cell_h = tile_h + self.caption_lines * LINE + 2 * PAD
        self.cell_w = tile_w + 2 * PAD
        w = self.left + layout.columns * self.cell_w
        h = self.top + self.rows * self.cell_h
        self.size = (w + w % 2, h + h % 2)  # even sides for yuv420p video

    def origin(self, index: int) -> tuple[int, int]:
        r, c = divmod(index, self.layout.columns)
        return self.left + c * self.cell_w + PAD, self.top + r * self.cell_h + PAD

    def background(self) -> Image.Image:
        img = Image.new("RGB", self.size, (24, 24, 24))
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default()
        for c, text in enumerate(self.layout.column_labels[: self.layout.columns]):
            x = self.left + c * self.cell_w + PAD
            for k, line in enumerate(_text_lines(text, self.tile_w)):
                draw.text((x, k * LINE), line, fill=(230, 230, 230), font=font)
        for r, text in enumerate(self.layout.row_labels[: self.rows]):
            for k, line in enumerate(_text_lines(text, HEADER_WIDTH - PAD)):
                draw.text((PAD, self.top + r * self.cell_h + PAD + k * LINE), line, fill=(255, 220, 120), font=font)
        for i in range(max(len(self.layout.cell_labels), len(self.layout.notes))):
            x, y = self.origin(i)
            lines = _text_lines(self.layout.cell_labels[i], self.tile_w) if self.layout.cell_labels else []
            if self.layout.notes:
                lines.append(self.layout.notes[i])
            for k, line in enumerate(lines):
                draw.text((x, y + self.tile_h + k * LINE), line, fill=(220, 220, 220), font=font)
        return img


def _check(videos: Sequence[torch.Tensor], layout: GridLayout) -> None:
    if not videos:
        raise ValueError("no images to lay out: connect the decoded sweep results")
    if len(layout.cell_labels) not in (0, len(videos)) or len(layout.notes) not in (0, len(videos)):
        raise ValueError(f"{len(videos)} images but {len(layout.cell_labels)} labels: connect the sweep's labels")
    if layout.columns < 1:
        raise ValueError(f"columns must be at least 1, got {layout.columns}")


def grid_image(videos: Sequence[torch.Tensor], layout: GridLayout, tile_height: int = 128) -> Image.Image:
    """A still grid: each cell shows its first, middle and last frame side by side."""
    _check(videos, layout)
    strips = []
    for v in videos:
        frames = [_to_pil(v[i], tile_height) for i in key_frames(v)]
        strip = Image.new("RGB", (sum(f.width for f in frames) + PAD * (len(frames) - 1), tile_height))
        x = 0
        for f in frames:
            strip.paste(f, (x, 0))
            x += f.width + PAD
        strips.append(strip)
    canvas = _Canvas(layout, max(s.width for s in strips), tile_height, len(strips))
    img = canvas.background()
    for i, strip in enumerate(strips):
        img.paste(strip, canvas.origin(i))
    return img


def _check_audio(videos: Sequence[torch.Tensor], audio: Sequence[AudioTrack]) -> int:
    if len(audio) != len(videos):
        raise ValueError(f"{len(videos)} videos but {len(audio)} audio tracks: connect one audio per cell")
    rates = {a.sample_rate for a in audio}
    if len(rates) != 1:
        raise ValueError(f"the cells' audio has several sample rates {sorted(rates)}: decode them with one audio VAE")
    return rates.pop()


def grid_video(
    videos: Sequence[torch.Tensor],
    layout: GridLayout,
    path: Path,
    fps: float = 24.0,
    tile_height: int = 128,
    audio: Sequence[AudioTrack] | None = None,
) -> Path:
    """An mp4 (H.264, yuv420p) of the grid. Without ``audio`` all cells play side by side (shorter cells hold their
    last frame); with one track per cell they play in turn, each with its sound (AAC), as the module says."""
    import av

    _check(videos, layout)
    rate = _check_audio(videos, audio) if audio is not None else None
    sizes = [_to_pil(v[0], tile_height).width for v in videos]
    canvas = _Canvas(layout, max(sizes), tile_height, len(videos))
    background = canvas.background()
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height = canvas.size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20"}
        sound = None
        if rate is not None:  # every stream must exist before the first packet is written
            sound = container.add_stream("aac", rate=rate)
            sound.layout = "stereo"
        frames = (_together if sound is None else _turns)(videos, canvas, background, tile_height)
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None and audio is not None:
            # Each cell's sound lasts exactly as long as its turn on screen, so picture and sound stay in step.
            seconds = [v.shape[0] / round(fps) for v in videos]
            track = torch.cat([_fitted(a, round(s * sound.rate)) for a, s in zip(audio, seconds, strict=True)], dim=1)
            _write_audio(container, sound, track)
    return Path(path)


def _together(videos: Sequence[torch.Tensor], canvas: _Canvas, background: Image.Image, tile_height: int):
    for t in range(max(v.shape[0] for v in videos)):
        img = background.copy()
        for i, v in enumerate(videos):
            img.paste(_to_pil(v[min(t, v.shape[0] - 1)], tile_height), canvas.origin(i))
        yield img


def _turns(videos: Sequence[torch.Tensor], canvas: _Canvas, background: Image.Image, tile_height: int):
    still = background.copy()
    for i, v in enumerate(videos):
        still.paste(_to_pil(v[0], tile_height), canvas.origin(i))
    for i, v in enumerate(videos):
        x, y = canvas.origin(i)
        framed = still.copy()
        ImageDraw.Draw(framed).rectangle(
            (x - PAD // 2, y - PAD // 2, x + canvas.tile_w + PAD // 2 - 1, y + tile_height + PAD // 2 - 1),
            outline=(255, 200, 0), width=PAD // 2,
        )
        for t in range(v.shape[0]):
            img = framed.copy()
            img.paste(_to_pil(v[t], tile_height), (x, y))
            yield img


def _write_audio(container, stream, track: torch.Tensor) -> None:
    """``track`` ``[2, samples]`` encoded into ``stream`` (AAC stereo) of ``container``."""
    import av

    data = track.numpy().astype(np.float32)
    step = 1024  # AAC's frame size
    for start in range(0, data.shape[1], step):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start : start + step]), format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts = stream.rate, start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def cell_videos(
    videos: Sequence[torch.Tensor],
    labels: Sequence[str],
    audio: Sequence[AudioTrack],
    folder: Path,
    stem: str,
    fps: float = 24.0,
    tile_height: int = 128,
) -> list[Path]:
    """One labelled mp4 with sound per cell: ``folder/<stem>_cell_NN.mp4``."""
    _check_audio(videos, audio)
    return [
        grid_video([v], GridLayout(1, [label]), folder / f"{stem}_cell_{i:02d}.mp4", fps, tile_height, [a])
        for i, (v, label, a) in enumerate(zip(videos, labels, audio, strict=True))
    ]
