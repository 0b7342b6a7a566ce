"""Audio of a clip's window (PyAV): 16 kHz stereo, exact length, mono/stereo/5.1 handling, no track; the dataset
report's audio lines and the skip_audio option."""

from __future__ import annotations

import argparse
import fractions

import av
import numpy as np
import pytest

from tests.dataset_media import write_image, write_video
from trainer_core.config.cli_options import add_section_arguments, section_from_args
from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset import build_report, load_dataset, report_text
from trainer_core.dataset.media import read_audio_window


def write_av(path, channels: np.ndarray, rate: int, layout: str, seconds: float = 1.0, start: float = 0.0):
    """A 24 fps video plus a lossless float audio track of ``channels`` ``[C, N]`` (Matroska, pcm_f32le)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = out.add_stream("pcm_f32le", rate=rate, layout=layout)
        for i in range(round(seconds * 24)):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 100, np.uint8), format="rgb24")))
        out.mux(video.encode())
        chunk = 1024
        for s in range(0, channels.shape[1], chunk):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels[:, s : s + chunk]), format="fltp",
                                               layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, s + round(start * rate), fractions.Fraction(1, rate)
            out.mux(audio.encode(frame))
        out.mux(audio.encode())
    return path


def _tone(rate: int, seconds: float, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_stereo_44k_is_resampled_and_kept_apart(tmp_path):
    left = _tone(44100, 1.0)
    path = write_av(tmp_path / "st.mkv", np.stack([left, np.zeros_like(left)]), 44100, "stereo")
    clip = read_audio_window(path, 0.25, 0.5)
    assert clip.waveform.shape == (2, 8000) and clip.waveform.dtype == np.float32
    assert (clip.source_channels, clip.source_rate) == (2, 44100)
    assert _rms(clip.waveform[0]) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert _rms(clip.waveform[1]) < 1e-3
    # The window starts 0.25 s in: the 440 Hz phase there matches the tone's (samples are where they belong).
    expected = _tone(16000, 0.75)[4000:12000]
    assert np.abs(clip.waveform[0, 100:-100] - expected[100:-100]).max() < 0.02


def test_mono_is_duplicated_and_window_past_the_end_is_zero_padded(tmp_path):
    path = write_av(tmp_path / "mono.mkv", _tone(16000, 1.0)[None], 16000, "mono")
    clip = read_audio_window(path, 0.5, 1.0)
    assert clip.waveform.shape == (2, 16000) and clip.source_channels == 1
    np.testing.assert_array_equal(clip.waveform[0], clip.waveform[1])
    np.testing.assert_allclose(clip.waveform[0, :8000], _tone(16000, 1.0)[8000:], atol=1e-6)
    assert not clip.waveform[:, 8000:].any()


def test_surround_is_downmixed_with_itu_coefficients(tmp_path):
    tone = _tone(48000, 1.0)
    channels = np.zeros((6, tone.size), np.float32)  # 5.1: FL FR FC LFE BL BR
    channels[2] = tone  # centre only
    channels[3] = tone  # LFE is dropped
    path = write_av(tmp_path / "surround.mkv", channels, 48000, "5.1")
    clip = read_audio_window(path, 0.0, 1.0)
    assert clip.source_channels == 6 and clip.waveform.shape == (2, 16000)
    gain = 0.7071 / (1 + 0.7071 + 0.7071)  # centre at -3 dB, rows normalised to sum 1
    assert _rms(clip.waveform[0, 200:-200]) == pytest.approx(gain * 0.5 / np.sqrt(2), rel=0.02)
    np.testing.assert_allclose(clip.waveform[0], clip.waveform[1], atol=1e-6)


def test_no_audio_track_gives_none(tmp_path):
    assert read_audio_window(write_video(tmp_path / "silent.mp4"), 0.0, 1.0) is None


def test_report_lines_and_skip_audio(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_video(data / "a.mp4", frames=30, audio=True)
    write_video(data / "b.mp4", frames=30)
    write_image(data / "c.png")
    for name in ("a", "b", "c"):
        (data / f"{name}.txt").write_text("a clip", encoding="utf-8")
    ds = load_dataset(DatasetConfig(path=str(data), buckets="64x64x9;64x64x1"))
    text = report_text(ds)
    assert "1 clips with audio, 2 without an audio track" in text
    assert "a.mp4 -> 64x64x9 @ 24 fps; audio: 2 ch 16 kHz" in text
    assert "b.mp4 -> 64x64x9 @ 24 fps; no audio track" in text
    report = build_report(ds)
    assert (report["summary"]["with_audio"], report["summary"]["without_audio"]) == (1, 2)
    item = next(i for i in ds.items if i.id == "a.mp4")
    clip = item.load_audio()
    assert clip.waveform.shape == (2, round(9 / 24 * 16000))
    assert next(i for i in ds.items if i.id == "b.mp4").load_audio() is None

    parser = argparse.ArgumentParser()
    add_section_arguments(parser, DatasetConfig, exclude=("path",))
    cfg = section_from_args(DatasetConfig, parser.parse_args(["--skip-audio"]), path=str(data))
    assert cfg.skip_audio is True and DatasetConfig().skip_audio is False
    assert "audio skipped" in report_text(load_dataset(cfg.model_copy(update={"buckets": "64x64x9;64x64x1"})))
