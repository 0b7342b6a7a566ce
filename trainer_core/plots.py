"""Loss-curve image (raw and smoothed) for the Plot Loss node, the demo and run folders."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def smooth(values: list[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average (what TensorBoard shows as 'smoothed').

    A NaN or Inf value (a diverged step) is given back as it is and left out of the average, so it does not turn
    every later point into NaN."""
    out, avg, n = [], 0.0, 0
    for v in values:
        if not np.isfinite(v):
            out.append(v)
            continue
        n += 1
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**n))
    return out


def non_finite_note(losses: list[float]) -> str | None:
    """A line naming the steps whose loss is NaN or Inf (not drawn), or None when every value is finite."""
    bad = [i for i, v in enumerate(losses, start=1) if not np.isfinite(v)]
    if not bad:
        return None
    shown = ", ".join(str(i) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
    return f"{len(bad)} of {len(losses)} losses are NaN or Inf (step {shown}): not drawn; the run diverged there"


def _finite_runs(values: list[float]) -> list[list[tuple[int, float]]]:
    """``(index, value)`` stretches of consecutive finite values."""
    runs: list[list[tuple[int, float]]] = [[]]
    for i, v in enumerate(values):
        if np.isfinite(v):
            runs[-1].append((i, v))
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def loss_curve(losses: list[float], width: int = 800, height: int = 400, beta: float = 0.9) -> Image.Image:
    """A white chart with the raw loss in light blue and the smoothed loss in dark blue, labelled axes."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 60, width - 20, 20, height - 40
    draw.rectangle([left, top, right, bottom], outline="black")
    if not losses:
        draw.text((left + 10, top + 10), "no steps yet", fill="black")
        return img
    finite = [v for v in losses if np.isfinite(v)] or [0.0]
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0

    def point(i: int, v: float) -> tuple[float, float]:
        x = left + (right - left) * (i / max(1, len(losses) - 1))
        y = bottom - (bottom - top) * ((min(max(v, lo), hi) - lo) / span)
        return x, y

    for series, colour, w in ((losses, (150, 190, 240), 1), (smooth(losses, beta), (20, 60, 160), 2)):
        for run in _finite_runs(series):  # a non-finite value breaks the line instead of bending it off the chart
            pts = [point(i, v) for i, v in run]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=w)
            else:
                draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour)
    note = non_finite_note(losses)
    if note:
        draw.text((left + 10, top + 10), note, fill=(200, 0, 0))
    draw.text((5, top), f"{hi:.4g}", fill="black")
    draw.text((5, bottom - 10), f"{lo:.4g}", fill="black")
    draw.text((left, bottom + 8), "step 1", fill="black")
    draw.text((right - 70, bottom + 8), f"step {len(losses)}", fill="black")
    draw.text((width // 2 - 60, bottom + 22), f"loss (raw, smoothed {beta})", fill="black")
    return img


def to_image_tensor(img: Image.Image):
    """PIL image -> ComfyUI IMAGE tensor [1, H, W, 3] float in 0..1."""
    import torch

    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]
