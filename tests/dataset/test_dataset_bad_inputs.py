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
