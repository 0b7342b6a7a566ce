"""The demo clips carry a short sound: every planned 17-frame window has audio, one pitch per clip."""

from __future__ import annotations

import numpy as np

from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset.loader import load_dataset
from trainer_core.dataset.report import audio_line
from trainer_core.demo import FRAMES, SIZE, TRIGGER, write_clips


def test_demo_clips_have_audio_for_their_whole_window(tmp_path):
    write_clips(tmp_path / "clips", count=3)
    ds = load_dataset(DatasetConfig(path=str(tmp_path / "clips"), trigger=TRIGGER, buckets=f"{SIZE}x{SIZE}x{FRAMES}"))
    assert audio_line(ds).startswith("3 clips with audio, 0 without")
    peaks = []
    for item in ds.items:
        clip = item.load_audio()
        assert clip is not None and clip.waveform.shape == (2, round(FRAMES / 24 * 16000))
        tail = clip.waveform[:, -1600:]  # the last 0.1 s of the window: the track covers all of it
        assert np.sqrt((tail**2).mean()) > 0.05
        spectrum = np.abs(np.fft.rfft(clip.waveform[0]))
        peaks.append(np.argmax(spectrum) * 16000 / clip.waveform.shape[1])
    assert len({round(p / 20) for p in peaks}) == 3, peaks  # a different pitch per clip
