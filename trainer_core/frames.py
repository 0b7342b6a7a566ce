"""Frame-count helpers for IMAGE batches ``[N, H, W, C]`` (ComfyUI layout), usable outside training too.

``trim_to_8n1(images, policy)`` keeps the largest 8n+1 frames (1, 9, 17, ...) that fit, taking the first, the
centre or the last ones; LTX-2.3's VAE otherwise drops the extra frames silently.
"""

from __future__ import annotations

import torch

from .dataset.buckets import floor_8n1

TRIM_POLICIES = ("first", "centre", "last")


def trim_to_8n1(images: torch.Tensor, policy: str = "first") -> torch.Tensor:
    """``images`` cut to the largest 8n+1 count, keeping the ``policy`` ("first", "centre", "last") frames."""
    if policy not in TRIM_POLICIES:
        raise ValueError(f"trim policy {policy!r} is not one of {', '.join(TRIM_POLICIES)}")
    if images.ndim != 4:
        raise ValueError(f"expected an IMAGE batch [N, H, W, C], got shape {tuple(images.shape)}")
    count = images.shape[0]
    keep = floor_8n1(count)
    if keep == 0:
        raise ValueError("the IMAGE batch is empty: there is no frame to keep")
    start = {"first": 0, "centre": (count - keep) // 2, "last": count - keep}[policy]
    return images[start : start + keep]
