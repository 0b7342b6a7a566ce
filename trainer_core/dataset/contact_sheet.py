"""A contact sheet of the dataset: the first prepared frame of each item, labelled with its status.

``contact_sheet(ds, columns, tile_width, max_items)`` returns an IMAGE tensor ``[1, H, W, 3]`` float 0..1.
Excluded items get a grey tile with their reason; an item whose frame fails to decode gets a red tile that
says so. Only one frame per item is decoded.
"""

from __future__ import annotations

import logging
import textwrap

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..plots import to_image_tensor
from .loader import PreparedDataset
from .media import MediaError

logger = logging.getLogger(__name__)

_LABEL_LINES = 3
_LINE_HEIGHT = 12
_COLOURS = {"ok": (40, 140, 60), "adjusted": (200, 140, 20), "excluded": (150, 40, 40)}


def _label(draw: ImageDraw.ImageDraw, x: int, y: int, width: int, status: str, text: str) -> None:
    font = ImageFont.load_default()
    draw.rectangle([x, y, x + width - 1, y + _LABEL_LINES * _LINE_HEIGHT + 3], fill=_COLOURS[status])
    chars = max(8, width // 6)
    lines = textwrap.wrap(f"{status}: {text}", chars)[:_LABEL_LINES]
    for n, line in enumerate(lines):
        draw.text((x + 3, y + 2 + n * _LINE_HEIGHT), line, fill=(255, 255, 255), font=font)


def _fit(frame: np.ndarray, width: int, height: int) -> Image.Image:
    img = Image.fromarray(frame)
    img.thumbnail((width, height), Image.Resampling.BILINEAR)
    tile = Image.new("RGB", (width, height), (24, 24, 24))
    tile.paste(img, ((width - img.width) // 2, (height - img.height) // 2))
    return tile


def contact_sheet(
    ds: PreparedDataset, columns: int = 6, tile_width: int = 256, max_items: int = 60,
    failures: list[str] | None = None,
) -> torch.Tensor:
    """First frames of up to ``max_items`` items in a grid of ``columns``, each labelled: ``[1, H, W, 3]``.

    An item whose frame cannot be read now (its file changed or vanished since the dataset was loaded) is labelled
    with the error on the sheet, logged, and its message appended to ``failures`` for the node's text."""
    entries = [("ok" if i.status == "ok" else "adjusted", i) for i in ds.items]
    entries += [("excluded", e) for e in ds.excluded]
    shown = entries[:max_items] or [("excluded", None)]
    tile_h = tile_width * 9 // 16
    label_h = _LABEL_LINES * _LINE_HEIGHT + 4
    cols = min(columns, len(shown))
    rows = (len(shown) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile_width, rows * (tile_h + label_h)), (12, 12, 12))
    draw = ImageDraw.Draw(sheet)
    for n, (status, entry) in enumerate(shown):
        x, y = (n % cols) * tile_width, (n // cols) * (tile_h + label_h)
        if entry is None:
            _label(draw, x, y, tile_width, "excluded", "the dataset has no items")
            continue
        text = f"{entry.id} {entry.bucket}" if status != "excluded" else f"{entry.id}: {entry.reason}"
        if status != "excluded":
            try:
                frame = (entry.first_frame()[0].numpy() * 255.0 + 0.5).astype(np.uint8)
                sheet.paste(_fit(frame, tile_width, tile_h), (x, y))
            except MediaError as err:
                logger.warning("preview of %s failed: %s", entry.id, err)
                status, text = "excluded", f"{entry.id}: preview failed: {err}"
                if failures is not None:
                    failures.append(text)
        _label(draw, x, y + tile_h, tile_width, status, text)
    if len(entries) > max_items:
        draw.text((4, 4), f"+{len(entries) - max_items} more not shown", fill=(255, 255, 255))
    return to_image_tensor(sheet)
