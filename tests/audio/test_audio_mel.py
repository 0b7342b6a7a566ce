"""The pack's torch log-mel against ComfyUI v0.33's own audio preprocessing (torchaudio's MelSpectrogram)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer_core.cache.audio_mel import log_mel, mel_filterbank


def _waveform(samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    tone = torch.stack([torch.sin(2 * math.pi * 440 * t), 0.3 * torch.sin(2 * math.pi * 3000 * t)])
    return (0.5 * tone + 0.1 * torch.randn(2, samples, generator=g))[None]  # [1, 2, N]


@pytest.mark.parametrize("samples", [16000, 12345, 600])
def test_log_mel_equals_comfyui_preprocessing(comfy, samples):
    from comfy.ldm.lightricks.vae.audio_vae import AudioPreprocessor

    wave = _waveform(samples)
    ref = AudioPreprocessor(target_sample_rate=16000, mel_bins=64, mel_hop_length=160, n_fft=1024).waveform_to_mel(
        wave, 16000, device="cpu"
    )
    ours = log_mel(wave)
    assert ours.shape == ref.shape == (1, 2, samples // 160 + 1, 64)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()


def test_filterbank_is_slaney_and_too_short_audio_is_refused():
    fb = mel_filterbank()
    assert fb.shape == (513, 64)
    assert (fb >= 0).all() and (fb.sum(0) > 0).all()  # every mel bin sees some FFT bin
    with pytest.raises(ValueError, match="too short"):
        log_mel(torch.zeros(2, 400))
