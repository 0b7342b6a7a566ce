"""Optimizer and learning-rate schedule over the LoRA parameters only."""

from __future__ import annotations

import math

import torch

from ..config import ConfigError
from ..config.training import OptimizationSettings


def build_optimizer(params: list[torch.nn.Parameter], cfg: OptimizationSettings) -> torch.optim.Optimizer:
    """AdamW (torch defaults for betas/eps, as the reference), or bitsandbytes' 8-bit AdamW."""
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError(
                "optimization.optimizer = 'adamw8bit' needs bitsandbytes: pip install bitsandbytes, or use 'adamw'"
            ) from None
        return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    # fused: one kernel set for all ~2,300 LoRA tensors on CUDA instead of multi-tensor launches per group.
    fused = bool(params) and params[0].is_cuda
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused)


def lr_factor(step: int, cfg: OptimizationSettings) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based)."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    if cfg.scheduler == "linear":  # the reference's LinearLR(1.0 -> 0.1)
        return 1.0 - 0.9 * progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizationSettings) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
