"""Probing and decoding real files written with PyAV: containers, frame windows, fps, rotation, bit depth, size."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from tests.dataset_media import CODECS, frame_index, write_image, write_video
from trainer_core.dataset.buckets import Bucket
from trainer_core.dataset.media import probe
from trainer_core.dataset.prepare import load_planned_frames, plan_item


def _plan(info, bucket, **kw):
    args = {"target_fps": None, "crop": "center", "trim_start": "start", "rng": random.Random(0)} | kw
    plan = plan_item(info, (bucket,), **args)
    assert not isinstance(plan, str), plan
    return plan


@pytest.mark.parametrize("ext", sorted(CODECS))
def test_every_container_probes_and_decodes(tmp_path, ext):
    path = write_video(tmp_path / f"clip{ext}", frames=30, size=(96, 64), fps=24)
    info = probe(path)
    assert (info.kind, info.width, info.height, info.frames) == ("video", 96, 64, 30)
    assert info.fps == pytest.approx(24.0)
    assert info.decoded_frames <= 2  # probing decodes one frame, not the clip
    frames = load_planned_frames(path, info, _plan(info, Bucket(64, 64, 25)))
    assert tuple(frames.shape) == (25, 64, 64, 3)
    assert [frame_index(f.numpy()) for f in frames] == list(range(25))


@pytest.mark.parametrize(("policy", "first"), [("start", 0), ("center", 7), ("random", None)])
def test_trim_start_policy_picks_the_window(tmp_path, policy, first):
    path = write_video(tmp_path / "clip.mp4", frames=40)
    info = probe(path)
    plan = _plan(info, Bucket(64, 64, 25), trim_start=policy, rng=random.Random(3))
    got = [frame_index(f.numpy()) for f in load_planned_frames(path, info, plan)]
    expected_first = plan.start_frame if first is None else first
    assert 0 <= expected_first <= 15
    assert got == list(range(expected_first, expected_first + 25))


def test_resampling_to_a_lower_fps_uses_timestamps(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames=48, fps=24)
    info = probe(path)
    assert info.frames_at(12.0) == 24
    plan = _plan(info, Bucket(64, 64, 17), target_fps=12.0)
    got = [frame_index(f.numpy()) for f in load_planned_frames(path, info, plan)]
    assert got == list(range(0, 34, 2))


def test_variable_frame_rate_is_sampled_by_timestamp(tmp_path):
    times = [0]
    for i in range(29):
        times.append(times[-1] + (20 if i % 2 else 60))  # alternating 60 ms / 20 ms gaps
    path = write_video(tmp_path / "vfr.mp4", frames=30, frame_times_ms=times)
    info = probe(path)
    assert info.variable_frame_rate
    plan = _plan(info, Bucket(64, 64, 9), target_fps=10.0)
    got = [frame_index(f.numpy()) for f in load_planned_frames(path, info, plan)]
    expected = [min(range(30), key=lambda i: (abs(times[i] - k * 100), i)) for k in range(9)]
    assert got == expected


def test_rotation_metadata_is_applied(tmp_path):
    path = write_video(tmp_path / "phone.mp4", frames=9, size=(96, 64), rotation=90)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (64, 96, 90)
    plan = _plan(info, Bucket(64, 96, 9))
    frame = load_planned_frames(path, info, plan)[0].numpy()
    assert frame.shape == (96, 64, 3)
    # the red block sat top-left in the coded picture; a 90 degree counter-clockwise turn puts it bottom-left
    assert frame[90, 4, 0] > 0.8 > frame[90, 4, 1] + 0.5
    assert frame[4, 4, 0] < 0.5


def test_ten_bit_video_becomes_eight_bit_rgb(tmp_path):
    path = write_video(tmp_path / "deep.mp4", frames=9, pix_fmt="yuv420p10le", codec="libx264")
    info = probe(path)
    assert info.pixel_format == "yuv420p10le"
    assert any("8-bit" in n for n in info.notes)
    frames = load_planned_frames(path, info, _plan(info, Bucket(64, 64, 9)))
    assert frames.dtype.is_floating_point and float(frames.min()) >= 0.0 and float(frames.max()) <= 1.0
    assert [frame_index(f.numpy()) for f in frames] == list(range(9))


def test_4k_is_scaled_while_decoding(tmp_path):
    path = write_video(tmp_path / "uhd.mp4", frames=3, size=(3840, 2160), fps=24)
    info = probe(path)
    plan = _plan(info, Bucket(256, 160, 1))
    tracemalloc.start()
    frames = load_planned_frames(path, info, plan)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert tuple(frames.shape) == (1, 160, 256, 3)
    one_4k_rgb_frame = 3840 * 2160 * 3
    assert peak < one_4k_rgb_frame / 4  # a full-size RGB copy of even one frame never existed in Python


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "I;16", "P", "RGB"])
def test_image_modes_become_rgb(tmp_path, mode):
    path = write_image(tmp_path / "still.png", mode=mode)
    info = probe(path)
    frames = load_planned_frames(path, info, _plan(info, Bucket(96, 64, 1)))
    assert tuple(frames.shape) == (1, 64, 96, 3)
    left, right = frames[0, 32, 4].tolist(), frames[0, 32, 90].tolist()
    tol = 0.06 if mode == "P" else 0.02  # Pillow's web palette moves greys by up to 11 levels
    assert left[0] == left[1] == left[2]
    assert right[0] == pytest.approx(200 / 255, abs=tol)
    if mode in ("RGBA", "LA"):
        assert left[0] == pytest.approx(1.0)  # transparent half flattened onto white
        assert any("transparency" in n for n in info.notes)
    else:
        assert left[0] == pytest.approx(40 / 255, abs=tol)


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_jpeg_and_webp_with_exif_orientation(tmp_path, suffix):
    path = write_image(tmp_path / f"still{suffix}", size=(96, 64), exif_orientation=6)
    info = probe(path)
    assert (info.width, info.height) == (64, 96)
    frame = load_planned_frames(path, info, _plan(info, Bucket(64, 96, 1)))[0]
    assert float(frame[4, 32].mean()) < 0.3 < float(frame[90, 32].mean())  # the dark half is now on top
