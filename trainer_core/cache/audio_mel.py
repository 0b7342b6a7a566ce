"""The log-mel spectrogram LTX-2.x's audio VAE encodes, in plain torch (no torchaudio).

ComfyUI (``comfy/ldm/lightricks/vae/audio_vae.py`` ``AudioPreprocessor``) and ltx-core (``audio_vae/ops.py``
``AudioProcessor``) both use ``torchaudio.transforms.MelSpectrogram`` with: 16 kHz, n_fft = win_length = 1024,
hop 160, periodic Hann window, ``center=True`` with reflect padding, power 1.0 (magnitude, not power), 64 mel bins
from 0 Hz to 8 kHz on the Slaney scale with Slaney (area) normalisation; then ``log(clamp(mel, 1e-5))`` and the
layout ``[B, C, T, 64]``. This module computes the same thing with ``torch.stft`` and a filterbank built here,
because torchaudio's compiled parts are often missing where this pack runs.
"""

from __future__ import annotations

import math

import torch

SAMPLE_RATE = 16000
N_FFT = 1024
HOP_LENGTH = 160
MEL_BINS = 64
LOG_FLOOR = 1e-5

_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz at 200/3 Hz per mel, logarithmic above
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    log_part = _MIN_LOG_MEL + torch.log(hz.clamp(min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return torch.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    log_part = _MIN_LOG_HZ * torch.exp(_LOG_STEP * (mel - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log_part, mel * _F_SP)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = MEL_BINS, f_min: float = 0.0,
    f_max: float | None = None,
) -> torch.Tensor:
    """Triangular Slaney-scale filters with Slaney area normalisation: ``[n_fft // 2 + 1, n_mels]`` float32."""
    f_max = sample_rate / 2.0 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = torch.tensor([f_min, f_max], dtype=torch.float64)
    m_lo, m_hi = _hz_to_mel(edges).tolist()
    f_pts = _mel_to_hz(torch.linspace(m_lo, m_hi, n_mels + 2, dtype=torch.float64))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    fb = fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels]))[None, :]
    return fb.to(torch.float32)


def log_mel(waveform: torch.Tensor, *, hop_length: int = HOP_LENGTH, n_fft: int = N_FFT,
            n_mels: int = MEL_BINS, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Waveform ``[..., C, N]`` at ``sample_rate`` -> log-mel ``[..., C, N // hop + 1, n_mels]`` (the VAE's input).

    ``N`` must exceed ``n_fft // 2`` (reflect padding), i.e. at least 33 ms at 16 kHz.
    """
    if waveform.shape[-1] <= n_fft // 2:
        raise ValueError(f"audio of {waveform.shape[-1]} samples is too short for a log-mel (needs > {n_fft // 2})")
    lead = waveform.shape[:-1]
    flat = waveform.reshape(-1, waveform.shape[-1]).float()
    window = torch.hann_window(n_fft, device=flat.device, dtype=flat.dtype)
    spec = torch.stft(
        flat, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True,
        pad_mode="reflect", normalized=False, onesided=True, return_complex=True,
    ).abs()  # [B, n_fft/2+1, T]
    fb = mel_filterbank(sample_rate, n_fft, n_mels).to(flat.device)
    mel = torch.matmul(spec.transpose(-1, -2), fb)  # [B, T, n_mels]
    mel = torch.log(torch.clamp(mel, min=LOG_FLOOR))
    return mel.reshape(*lead, mel.shape[-2], n_mels).to(waveform.dtype if waveform.is_floating_point() else mel.dtype)
