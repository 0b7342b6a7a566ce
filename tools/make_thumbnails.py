"""Thumbnails of the bundled workflows for ComfyUI's template browser: ``workflows/<name>.jpg`` beside each JSON.

The frontend asks for ``/api/workflow_templates/<pack>/<name>.jpg`` for every custom-node template (it assumes
jpg), and ComfyUI serves that from the same ``workflows/`` folder. Each thumbnail is a small drawing of the graph
(groups, nodes, links) with the workflow's title. Run after the workflows change:

    .venv/bin/python tools/make_thumbnails.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
SIZE = (512, 320)
HEADER = 46
MARGIN = 14
TITLE_HEIGHT = 30  # LiteGraph's title bar, drawn above a node's pos
BACKGROUND = (32, 33, 36)
COLORS = {
    "pack": ((214, 140, 58), (70, 52, 36)),  # this pack's nodes: title bar, body
    "note": ((90, 104, 120), (52, 58, 66)),
    "other": ((96, 96, 100), (58, 58, 62)),
}
LINK = (150, 190, 120)


def _kind(node_type: str) -> str:
    if node_type.startswith("LtxLora"):
        return "pack"
    return "note" if node_type in ("MarkdownNote", "Note") else "other"


def title_of(path: Path) -> str:
    """``2_train_lora_from_cache.json`` -> ``2 · Train lora from cache``."""
    number, _, rest = path.stem.partition("_")
    return f"{number} · {rest.replace('_', ' ').capitalize()}"


def render(workflow: dict, title: str) -> Image.Image:
    """The graph of ``workflow`` scaled into the thumbnail below a title band."""
    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    boxes = {
        n["id"]: (n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        for n in workflow["nodes"]
    }
    areas = list(boxes.values()) + [(x, y, x + w, y + h) for x, y, w, h in (g["bounding"] for g in workflow["groups"])]
    left, top = min(b[0] for b in areas), min(b[1] for b in areas)
    right, bottom = max(b[2] for b in areas), max(b[3] for b in areas)
    scale = min((SIZE[0] - 2 * MARGIN) / (right - left), (SIZE[1] - HEADER - MARGIN) / (bottom - top))

    def at(x: float, y: float) -> tuple[float, float]:
        return MARGIN + (x - left) * scale, HEADER + (y - top) * scale

    for x, y, w, h in (g["bounding"] for g in workflow["groups"]):
        draw.rounded_rectangle([*at(x, y), *at(x + w, y + h)], radius=4, fill=(44, 52, 62), outline=(63, 120, 158))
    for node in workflow["nodes"]:
        x0, y0, x1, y1 = boxes[node["id"]]
        bar, body = COLORS[_kind(node["type"])]
        draw.rectangle([*at(x0, y0), *at(x1, y1)], fill=body)
        draw.rectangle([*at(x0, y0), *at(x1, y0 + TITLE_HEIGHT)], fill=bar)
    by_id = {n["id"]: n for n in workflow["nodes"]}
    for _, origin, _, target, _, _ in workflow["links"]:
        (ox0, oy0, ox1, _), (tx0, ty0, _, _) = boxes[origin], boxes[target]
        if by_id[origin]["pos"][0] == by_id[target]["pos"][0]:  # same column: along the right edge
            draw.line([at(ox1, oy0 + TITLE_HEIGHT), at(ox1 + 12, ty0 + TITLE_HEIGHT)], fill=LINK, width=1)
        else:
            draw.line([at(ox1, oy0 + TITLE_HEIGHT), at(tx0, ty0 + TITLE_HEIGHT)], fill=LINK, width=1)
    draw.rectangle([0, 0, SIZE[0], HEADER - 8], fill=(24, 24, 27))
    draw.text((MARGIN, 8), "LTX LoRA trainer", fill=(214, 140, 58), font=ImageFont.load_default(12))
    draw.text((MARGIN, 21), title, fill=(235, 235, 235), font=ImageFont.load_default(15))
    return image


def write_all(folder: Path = WORKFLOWS) -> list[Path]:
    """Write ``<name>.jpg`` for every workflow JSON in ``folder``; returns the files written."""
    written = []
    for path in sorted(folder.glob("*.json")):
        image = render(json.loads(path.read_text(encoding="utf-8")), title_of(path))
        out = path.with_suffix(".jpg")
        image.save(out, "JPEG", quality=85, optimize=True)
        written.append(out)
    return written


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else WORKFLOWS):
        sys.stdout.write(f"{p} ({p.stat().st_size // 1024} KB)\n")
