"""One test per bad input of issue 2: each gets a clear per-item reason and the rest of the batch still loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dataset_media import write_audio_only, write_image, write_video
from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset import build_report, load_dataset, report_text

BUCKETS = "64x64x9;64x64x1"


def _good(folder: Path) -> Path:
    write_video(folder / "good.mp4", frames=12)
    (folder / "good.txt").write_text("a woman walks", encoding="utf-8")
    return folder / "good.mp4"


def _load(path: Path, **kw):
    ds = load_dataset(DatasetConfig(path=str(path), buckets=BUCKETS, **kw))
    good = [i for i in ds.items if i.id == "good.mp4"]
    assert len(good) == 1, "the good clip must still load"
    assert tuple(good[0].load_frames().shape) == (9, 64, 64, 3)
    json.dumps(build_report(ds))  # the report stays serializable with bad items in it
    return ds


def _excluded(ds, item_id: str) -> str:
    reasons = {e.id: e.reason for e in ds.excluded}
    assert item_id in reasons, f"{item_id} not excluded: {report_text(ds)}"
    assert Path(item_id.split("#")[0]).name in reasons[item_id]
    return reasons[item_id]


def _item(ds, item_id: str):
    found = [i for i in ds.items if i.id == item_id]
    assert found, f"{item_id} not loaded: {report_text(ds)}"
    return found[0]


def test_corrupt_file(tmp_path):
    _good(tmp_path)
    (tmp_path / "noise.mp4").write_bytes(bytes(range(256)) * 64)
    reason = _excluded(_load(tmp_path), "noise.mp4")
    assert "corrupt" in reason


def test_truncated_file(tmp_path):
    _good(tmp_path)
    data = write_video(tmp_path / "full.mp4", frames=30).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "full.mp4").unlink()
    reason = _excluded(_load(tmp_path), "cut.mp4")
    assert "truncated" in reason


def test_truncated_file_with_intact_header_keeps_the_frames_present(tmp_path):
    _good(tmp_path)
    data = write_video(tmp_path / "full.mkv", frames=48).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 6 // 10])
    (tmp_path / "full.mkv").unlink()
    item = _item(_load(tmp_path), "cut.mkv")
    note = next(c for c in item.adjustments if "truncated" in c)
    assert "header says 2.00 s" in note and item.info.frames < 48
    assert tuple(item.load_frames().shape) == (9, 64, 64, 3)


def test_zero_byte_file(tmp_path):
    _good(tmp_path)
    (tmp_path / "empty.mov").write_bytes(b"")
    assert "zero-byte" in _excluded(_load(tmp_path), "empty.mov")


def test_audio_only_file(tmp_path):
    _good(tmp_path)
    write_audio_only(tmp_path / "voice.mp4")
    reason = _excluded(_load(tmp_path), "voice.mp4")
    assert "no video stream" in reason and "audio" in reason


def test_one_frame_video_becomes_a_still(tmp_path):
    _good(tmp_path)
    write_video(tmp_path / "single.mp4", frames=1)
    item = _item(_load(tmp_path), "single.mp4")
    assert str(item.bucket) == "64x64x1"
    assert any("one-frame video" in c for c in item.adjustments)
    assert tuple(item.load_frames().shape) == (1, 64, 64, 3)


def test_one_frame_video_without_image_bucket_is_excluded(tmp_path):
    _good(tmp_path)
    write_video(tmp_path / "single.mp4", frames=1)
    ds = load_dataset(DatasetConfig(path=str(tmp_path), buckets="64x64x9"))
    reason = _excluded(ds, "single.mp4")
    assert "single frame" in reason and "F=1" in reason
    assert [i.id for i in ds.items] == ["good.mp4"]


def test_clip_too_short_for_every_bucket(tmp_path):
    _good(tmp_path)
    write_video(tmp_path / "short.mp4", frames=5)
    reason = _excluded(_load(tmp_path), "short.mp4")
    assert "too short" in reason and "5 frames" in reason and "64x64x9" in reason


def test_non_utf8_caption(tmp_path):
    _good(tmp_path)
    write_video(tmp_path / "latin.mp4", frames=9)
    (tmp_path / "latin.txt").write_bytes("une femme à Paris".encode("latin-1"))
    reason = _excluded(_load(tmp_path), "latin.mp4")
    assert "latin.txt" in reason and "not UTF-8" in reason


def test_missing_caption(tmp_path):
    _good(tmp_path)
    write_video(tmp_path / "silent.mp4", frames=9)
    item = _item(_load(tmp_path, trigger="sks"), "silent.mp4")
    assert item.caption == "sks"
    assert any("missing caption" in f and "silent.txt" in f for f in item.caption_findings)


def test_missing_media_file(tmp_path):
    _good(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps([
        {"video": "good.mp4", "caption": "a woman walks"},
        {"video": "clips/gone.mp4", "caption": "never written"},
    ]))
    reason = _excluded(_load(tmp_path), "clips/gone.mp4")
    assert "not found" in reason


def test_duplicate_entries(tmp_path):
    _good(tmp_path)
    write_video(tmp_path / "b.mp4", frames=9)
    (tmp_path / "dataset.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"video": "good.mp4", "caption": "a woman walks"},
        {"video": "b.mp4", "caption": "b"},
        {"video": "./b.mp4", "caption": "b again"},
    ]))
    ds = _load(tmp_path)
    reason = _excluded(ds, "b.mp4#2")
    assert "duplicate entry" in reason and "line 3" in reason and "line 2" in reason
    assert _item(ds, "b.mp4").caption == "b"


def test_identical_copy_is_a_duplicate(tmp_path):
    _good(tmp_path)
    (tmp_path / "good_copy.mp4").write_bytes((tmp_path / "good.mp4").read_bytes())
    reason = _excluded(_load(tmp_path), "good_copy.mp4")
    assert "identical copy of good.mp4" in reason


@pytest.mark.parametrize("escaping", ["../outside.mp4", "/etc/hostname"])
def test_manifest_path_escaping_the_folder_is_refused(tmp_path, escaping):
    data = tmp_path / "data"
    data.mkdir()
    _good(data)
    write_video(tmp_path / "outside.mp4", frames=9)
    with (data / "dataset.csv").open("w", encoding="utf-8") as fh:
        fh.write(f'media_path,caption\ngood.mp4,a woman walks\n{escaping},"sneaky, but captioned"\n')
    reason = _excluded(_load(data), escaping)
    assert "outside the dataset folder" in reason and "refused" in reason


def test_rgba_image(tmp_path):
    _good(tmp_path)
    write_image(tmp_path / "logo.png", mode="RGBA")
    item = _item(_load(tmp_path), "logo.png")
    assert item.status == "adjusted" and any("transparency flattened" in c for c in item.adjustments)
    assert tuple(item.load_frames().shape) == (1, 64, 64, 3)


def test_greyscale_image(tmp_path):
    _good(tmp_path)
    write_image(tmp_path / "grey.png", mode="L")
    item = _item(_load(tmp_path), "grey.png")
    assert any("greyscale" in c for c in item.adjustments)
    frame = item.load_frames()
    assert tuple(frame.shape) == (1, 64, 64, 3)
    assert bool((frame[..., 0] == frame[..., 2]).all())


def test_ten_bit_video(tmp_path):
    _good(tmp_path)
    write_video(tmp_path / "deep.mkv", frames=9, pix_fmt="yuv420p10le", codec="libx264")
    item = _item(_load(tmp_path), "deep.mkv")
    assert any("yuv420p10le" in c and "8-bit" in c for c in item.adjustments)
    assert tuple(item.load_frames().shape) == (9, 64, 64, 3)


def test_4k_input_is_downscaled(tmp_path):
    _good(tmp_path)
    write_video(tmp_path / "uhd.mp4", frames=1, size=(3840, 2160))
    item = _item(_load(tmp_path), "uhd.mp4")
    assert any("resized 3840x2160 -> 114x64" in c for c in item.adjustments)
    assert tuple(item.load_frames().shape) == (1, 64, 64, 3)


def test_unreadable_manifest_fails_with_the_file_name(tmp_path):
    from trainer_core.config import ConfigError

    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"dataset\.json is not valid JSON"):
        load_dataset(DatasetConfig(path=str(tmp_path)))


# Issue 21: one bad file never stops the scan; containment of symbolic links; an empty result is a clear error.


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A few-hundred-byte PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [11_000, 40_000])  # above this pack's limit; the second also above Pillow's
def test_decompression_bomb_is_skipped_naming_the_limit(tmp_path, side):
    from trainer_core.dataset.media import MAX_IMAGE_PIXELS, MediaError, load_image

    _good(tmp_path)
    bomb = _png_declaring(tmp_path / "bomb.png", side, side)
    reason = _excluded(_load(tmp_path), "bomb.png")
    assert f"refuses images above {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels" in reason
    assert "decompression bomb" in reason and "MAX_IMAGE_PIXELS" in reason
    with pytest.raises(MediaError, match="decompression bomb"):  # decoding checks it too, not only the probe
        load_image(bomb, size=(64, 64), crop=(0, 0, 64, 64))


def test_text_file_named_like_a_video(tmp_path):
    _good(tmp_path)
    (tmp_path / "notes.mp4").write_text("shot list:\n1. the walk\n2. the turn\n", encoding="utf-8")
    reason = _excluded(_load(tmp_path), "notes.mp4")
    assert "is not a video: it holds plain text" in reason and "extension is wrong" in reason


def test_folder_named_like_a_clip(tmp_path):
    _good(tmp_path)
    (tmp_path / "clip.mp4").mkdir()
    assert "is a folder, not a media file" in _excluded(_load(tmp_path), "clip.mp4")


def _zero_frame_video(path: Path, codec: str) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize(("name", "codec", "expected"), [
    ("zero.mp4", "libx264", "holds no streams at all: no video frames"),
    ("zero.avi", "mpeg4", "the video stream holds no frames (a zero-frame video"),
])
def test_zero_frame_video(tmp_path, name, codec, expected):
    _good(tmp_path)
    _zero_frame_video(tmp_path / name, codec)
    assert expected in _excluded(_load(tmp_path), name)


def test_symlink_out_of_the_dataset_folder_is_refused_and_one_inside_is_used(tmp_path):
    data = tmp_path / "data"
    (data / "takes").mkdir(parents=True)
    _good(data)
    write_video(tmp_path / "private.mp4", frames=9)
    write_video(data / "takes" / "take1.mp4", frames=10)
    (data / "outside.mp4").symlink_to(tmp_path / "private.mp4")
    (data / "inside.mp4").symlink_to(data / "takes" / "take1.mp4")
    ds = _load(data)
    assert "symbolic link out of the dataset folder" in _excluded(ds, "outside.mp4")
    assert tuple(_item(ds, "inside.mp4").load_frames().shape) == (9, 64, 64, 3)


def test_caption_symlinked_out_of_the_dataset_folder_is_never_read(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _good(data)
    write_video(data / "clip.mp4", frames=9)
    (tmp_path / "secret.txt").write_text("do not show me", encoding="utf-8")
    (data / "clip.txt").symlink_to(tmp_path / "secret.txt")
    ds = _load(data)
    assert "caption file clip.txt is a symbolic link out of the dataset folder" in _excluded(ds, "clip.mp4")
    assert "do not show me" not in report_text(ds) and "do not show me" not in json.dumps(build_report(ds))


def test_manifest_path_through_a_symlinked_folder_out_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _good(data)
    (tmp_path / "elsewhere").mkdir()
    write_video(tmp_path / "elsewhere" / "clip.mp4", frames=9)
    (data / "more").symlink_to(tmp_path / "elsewhere")
    (data / "dataset.json").write_text(json.dumps([
        {"video": "good.mp4", "caption": "a woman walks"}, {"video": "more/clip.mp4", "caption": "linked"},
    ]))
    reason = _excluded(_load(data), "more/clip.mp4")
    assert "outside the dataset folder" in reason and "symbolic link" in reason


def test_a_dataset_left_empty_names_the_folder_and_every_exclusion(tmp_path):
    from trainer_core.config import ConfigError

    (tmp_path / "notes.mp4").write_text("not a video\n", encoding="utf-8")
    _png_declaring(tmp_path / "bomb.png", 40_000, 40_000)
    (tmp_path / "empty.mov").write_bytes(b"")
    ds = load_dataset(DatasetConfig(path=str(tmp_path), buckets=BUCKETS))
    assert [e.id for e in ds.excluded] == ["bomb.png", "empty.mov", "notes.mp4"]
    with pytest.raises(ConfigError) as err:
        ds.require_items()
    message = str(err.value)
    assert message.startswith(f"dataset {tmp_path} has no usable item: all 3 entries were excluded")
    for e in ds.excluded:
        assert f"{e.id}: {e.reason}" in message


def test_a_folder_without_media_says_so(tmp_path):
    from trainer_core.config import ConfigError

    (tmp_path / "readme.md").write_text("clips go here")
    with pytest.raises(ConfigError, match=r"holds no media files .*found only readme\.md"):
        load_dataset(DatasetConfig(path=str(tmp_path))).require_items()
