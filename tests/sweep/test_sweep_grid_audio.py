"""Grid videos with sound: each cell plays in turn with its own audio track (AAC), and one mp4 per cell."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from trainer_core.sweep.grid import AudioTrack, GridLayout, as_audio, cell_videos, grid_video

FPS, RATE = 24, 24000


def _video(frames: int, level: float) -> torch.Tensor:
    return torch.full((frames, 32, 48, 3), level)


def _tone(seconds: float, amplitude: float, channels: int = 2) -> AudioTrack:
    t = torch.arange(round(seconds * RATE)) / RATE
    return AudioTrack((amplitude * torch.sin(2 * torch.pi * 440 * t)).expand(channels, -1).clone(), RATE)


def read_back(path: Path) -> tuple[int, float, np.ndarray, int]:
    """(video frames, audio duration in s, decoded audio [C, S], audio sample rate)."""
    with av.open(str(path)) as container:
        (audio_stream,) = container.streams.audio
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
    wave = np.concatenate(chunks, axis=1)
    return frames, wave.shape[1] / audio_stream.rate, wave, audio_stream.rate


def test_grid_video_plays_each_cell_in_turn_with_its_sound(tmp_path):
    videos = [_video(9, 0.2), _video(17, 0.8)]
    # cell 0 sounds (mono, longer than its 9 frames: cut), cell 1 is silent (shorter: padded with silence)
    audio = [_tone(1.0, 0.5, channels=1), _tone(0.1, 0.0)]
    path = grid_video(videos, GridLayout(2, ["loud", "quiet"]), tmp_path / "grid.mp4", FPS, 64, audio)
    frames, seconds, wave, rate = read_back(path)
    assert frames == 9 + 17
    assert seconds == pytest.approx(26 / FPS, abs=0.05)  # AAC adds up to one 1024-sample frame of padding
    assert wave.shape[0] == 2 and rate == RATE
    first, second = wave[:, : round(9 / FPS * rate)], wave[:, round(9 / FPS * rate) + 2048 :]
    assert np.sqrt((first[:, 2048:] ** 2).mean()) > 0.2  # the first cell's turn has its tone
    assert np.abs(second).max() < 0.02  # the second cell's turn is its (silent) audio


def test_grid_video_without_audio_has_no_audio_stream(tmp_path):
    path = grid_video([_video(9, 0.5)], GridLayout(1, ["a"]), tmp_path / "grid.mp4", FPS, 64)
    with av.open(str(path)) as container:
        assert not container.streams.audio and container.streams.video[0].frames in (0, 9)


def test_cell_videos_one_mp4_with_sound_per_cell(tmp_path):
    videos = [_video(9, 0.2), _video(9, 0.8)]
    paths = cell_videos(videos, ["a", "b"], [_tone(1.0, 0.5), _tone(1.0, 0.3)], tmp_path, "sweep", FPS, 64)
    assert [p.name for p in paths] == ["sweep_cell_00.mp4", "sweep_cell_01.mp4"]
    for path, amplitude in zip(paths, (0.5, 0.3), strict=True):
        frames, seconds, wave, _ = read_back(path)
        assert frames == 9 and seconds == pytest.approx(9 / FPS, abs=0.05)
        assert np.abs(wave).max() == pytest.approx(amplitude, abs=0.1)


def test_audio_mismatches_are_refused(tmp_path):
    videos = [_video(9, 0.2), _video(9, 0.8)]
    with pytest.raises(ValueError, match="2 videos but 1 audio tracks"):
        grid_video(videos, GridLayout(2, ["a", "b"]), tmp_path / "g.mp4", FPS, 64, [_tone(1, 0.5)])
    other = AudioTrack(torch.zeros(2, 100), 16000)
    with pytest.raises(ValueError, match="several sample rates"):
        grid_video(videos, GridLayout(2, ["a", "b"]), tmp_path / "g.mp4", FPS, 64, [_tone(1, 0.5), other])


def test_as_audio_takes_comfyui_audio_batches_in_sequence():
    wave = torch.arange(12.0).reshape(2, 2, 3)
    track = as_audio({"waveform": wave, "sample_rate": 16000})
    assert track.sample_rate == 16000 and track.waveform.tolist() == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]]
