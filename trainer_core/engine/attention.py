"""Which fused kernel PyTorch's ``scaled_dot_product_attention`` runs while training (``memory.attention``).

PyTorch tries its flash attention (FlashAttention-2) first by default. On Hopper GPUs cuDNN's fused attention
is faster for these shapes (head dim 64 and 128, bf16, thousands of tokens): in the H100 profile attention took
a third of the video-only step's kernel time. ``auto`` puts cuDNN first for the training session; PyTorch falls
back to the next backend wherever cuDNN does not support the inputs. The backend is a process-wide setting, so it
also covers the checkpoint recompute that autograd runs on its own thread; compiled blocks bake it in when they
are traced.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def attention_kernels(setting: str, device: torch.device) -> Iterator[None]:
    """Within the block, SDPA on CUDA tries cuDNN's attention first for ``"auto"``; ``"flash"`` keeps PyTorch's
    order. Restored on exit."""
    if setting != "auto" or device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(order, set_priority=True):
        yield
