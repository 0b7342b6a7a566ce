"""Noise-level (sigma) sampling, matching Lightricks' reference trainer.

The shifted logit-normal draws ``sigmoid(N(mu, std))`` with ``mu`` linear in the token count (0.95 at 1,024
tokens, 2.05 at 4,096, not clamped), stretches it between the normal's 0.5th and 99.9th percentiles so the
draws cover [0, 1], reflects values below ``eps``, and replaces ``uniform_prob`` of the draws with uniform
ones so neither end of the trajectory goes untrained.
"""

from __future__ import annotations

import torch

Z_999 = 3.0902  # 99.9th percentile of the standard normal
Z_005 = -2.5758  # 0.5th percentile


def shift_for_tokens(tokens: int, min_tokens: int = 1024, max_tokens: int = 4096) -> float:
    """The logit-normal mean for a sequence of ``tokens`` tokens (the reference's linear rule)."""
    slope = (2.05 - 0.95) / (max_tokens - min_tokens)
    return 0.95 + slope * (tokens - min_tokens)


def sample_sigmas(
    n: int,
    tokens: int,
    generator: torch.Generator,
    mode: str = "shifted_logit_normal",
    std: float = 1.0,
    eps: float = 1e-3,
    uniform_prob: float = 0.1,
) -> torch.Tensor:
    """``n`` sigmas in [0, 1] for sequences of ``tokens`` tokens (CPU float32)."""
    uniform = (1 - eps) * torch.rand(n, generator=generator) + eps
    if mode == "uniform":
        return uniform
    if mode != "shifted_logit_normal":
        raise ValueError(f"unknown timestep sampling mode {mode!r}")
    mu = shift_for_tokens(tokens)
    logit_normal = torch.sigmoid(torch.randn(n, generator=generator) * std + mu)
    lo = torch.sigmoid(torch.tensor(mu + Z_005 * std))
    hi = torch.sigmoid(torch.tensor(mu + Z_999 * std))
    stretched = (logit_normal - lo) / (hi - lo)
    stretched = torch.where(stretched >= eps, stretched, 2 * eps - stretched).clamp(0, 1)
    use_uniform = torch.rand(n, generator=generator) <= uniform_prob
    return torch.where(use_uniform, uniform, stretched)
