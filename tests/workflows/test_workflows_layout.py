"""The bundled workflows' layout: no node is drawn over another on ComfyUI's canvas."""

from __future__ import annotations

from itertools import combinations

from tests import workflow_support as ws


def test_no_two_nodes_overlap_with_the_train_nodes_chart_counted():
    overlaps = []
    for name in ws.BUNDLED:
        nodes = ws.load_workflow(name)["nodes"]
        for a, b in combinations(nodes, 2):
            (l1, t1, r1, b1), (l2, t2, r2, b2) = ws.node_box(a), ws.node_box(b)
            if l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1:
                overlaps.append(f"{name}: {a['type']} #{a['id']} and {b['type']} #{b['id']}")
    assert not overlaps, "overlapping nodes (regenerate with `python -m tests.workflow_support`):\n" + "\n".join(
        overlaps
    )



def test_each_workflow_has_a_small_thumbnail_of_its_current_graph():
    """The template browser's ``<name>.jpg`` (tools/make_thumbnails.py) is there, small and of today's layout."""
    from PIL import Image, ImageChops

    from tools.make_thumbnails import render, title_of

    for name in ws.BUNDLED:
        path = (ws.WORKFLOWS / name).with_suffix(".jpg")
        assert path.is_file() and path.stat().st_size < 50_000, f"{path.name}: run tools/make_thumbnails.py"
        fresh = render(ws.load_workflow(name), title_of(path))
        with Image.open(path) as saved:
            diff = ImageChops.difference(saved.convert("RGB"), fresh).convert("L")
        # JPEG blurs edges a little; a moved node changes far more pixels than that.
        assert sum(diff.histogram()[49:]) < 200, f"{path.name} is stale: run tools/make_thumbnails.py"
