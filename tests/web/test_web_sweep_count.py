"""The sweep node's live cell count in the real frontend: headless Chromium against a ComfyUI v0.33 server whose
``models/loras`` holds a training run's checkpoint folder (see ``tests/web_support.py``).

The bundled sweep workflow is opened, its widgets and links are changed the ways a user changes them (the widget's
own ``setValue``, a text area's value, unlinking an input), and the node's count text must follow: as stored on the
node (``node.ltxCellText``) and as drawn on the canvas. A screenshot goes to ``test-artifacts/web_sweep_count.png``.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests import workflow_support as ws
from tests.web_support import ARTIFACTS, Browser, comfy_server, with_browser

pytestmark = pytest.mark.comfyui  # the server fixture finds ComfyUI itself, not through `comfy`


WORKFLOW = "3_sweep_checkpoints_x_strengths.json"
EXTENSION = "ltxlora.SweepCellCount"
CHECKPOINTS = 3

# Records what the canvas draws, so the test sees the text painted and not only stored.
SPY = """(() => {
    window.__drawn = new Map();  // text -> colour
    const fillText = CanvasRenderingContext2D.prototype.fillText;
    CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
        window.__drawn.set(String(text), this.fillStyle);
        return fillText.call(this, text, ...rest);
    };
})()"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_sweep_server")
    run = base / "models" / "loras" / ws.RUN_NAME
    run.mkdir(parents=True)
    for step in range(1, CHECKPOINTS + 1):
        (run / f"{ws.RUN_NAME}_step_{step * 100:05}.safetensors").write_bytes(b"x")
    with comfy_server(base, "web_sweep_server.log") as url:
        yield url


async def _after(browser: Browser, label: str, change: str) -> dict:
    """Run ``change`` (page JS on ``node``, may ``await``); the node's count once it has arrived and is drawn."""
    await browser.eval(
        f"(async () => {{ let node = window.__sweep; if (node) node.ltxCellText = null;"
        f"window.__drawn.clear(); {change}; app.graph.setDirtyCanvas(true, true); }})()"
    )
    state = await browser.wait_for(
        "window.__sweep.ltxCellText && ({text: __sweep.ltxCellText, error: __sweep.ltxCellError})",
        timeout=30,
        what=f"the cell count ({label})",
    )
    # [first line, colour] (a long text is wrapped to the node's width): the longest drawn start of the text, as
    # the node's own labels may start it too ("strengths")
    state["drawn"] = await browser.wait_for(
        "(app.graph.setDirtyCanvas(true, true), [...__drawn].filter(([text]) => __sweep.ltxCellText.startsWith(text))"
        ".sort((a, b) => b[0].length - a[0].length).find(([text]) => text.length > 'strengths'.length))",
        timeout=30,
        what=f"the cell count drawn ({label})",
    )
    return state


def _set(widget: str, value: str) -> str:
    return (
        f"const w = node.widgets.find(w => w.name === {json.dumps(widget)});"
        f"w.setValue({json.dumps(value)}, {{node, canvas: app.canvas}})"
    )


# Changes as a user makes them, in order: label -> page JS on ``node``.
STEPS = {
    "3 seeds": _set("seeds", "1, 2, 3"),
    "4 strengths": _set("strengths", "0, 0.25, 0.5, 1.0"),
    "bad strength": _set("strengths", "0, x"),
    "2 strengths": _set("strengths", "0, 1.0"),
    "one input": "node.disconnectInput(node.findInputSlot('without_trigger'))",
    # a text area's value changes without a widget callback: the count follows when the node is drawn
    "prompt line": "node.widgets.find(w => w.name === 'prompts').value = 'a cat'",
}


def test_cell_count_follows_widgets_and_links(server, tmp_path):
    async def scenario(browser: Browser):
        await browser.open(server, extension=EXTENSION)
        await browser.eval(SPY)
        load = (
            f"await app.loadGraphData({json.dumps(ws.load_workflow(WORKFLOW))});"
            "node = window.__sweep = app.graph.nodes.find(n => n.type === 'LtxLoraSweep');"
            "app.canvas.ds.scale = 1; app.canvas.ds.offset = [-node.pos[0] + 200, -node.pos[1] + 120]"
        )
        states = {"loaded": await _after(browser, "loaded", load)}
        for label, change in STEPS.items():
            states[label] = await _after(browser, label, change)
            if label == "4 strengths":
                for kind in ("keyDown", "keyUp"):  # closes the template browser a first visit opens
                    await browser.send("Input.dispatchKeyEvent", type=kind, key="Escape", windowsVirtualKeyCode=27)
                await asyncio.sleep(0.5)
                await browser.screenshot(ARTIFACTS / "web_sweep_count.png")
        return states

    s = with_browser(scenario)(tmp_path)
    ok, red = "#99cc99", "#ff6666"
    # the workflow: strengths 0, 0.5, 1.0 -> base row + 3 checkpoints x 2; x 2 prompts (both inputs linked) x 1 seed
    assert s["loaded"] == {"text": "14 cells (max 48)", "error": False, "drawn": ["14 cells (max 48)", ok]}
    assert s["3 seeds"] == {"text": "42 cells (max 48)", "error": False, "drawn": ["42 cells (max 48)", ok]}
    over = s["4 strengths"]  # (1 + 3 x 3) rows x 2 x 3 = 60
    assert over["error"] is True and over["text"].startswith("this sweep has 60 cells, more than max_cells = 48")
    assert over["drawn"][0].startswith("this sweep has 60 cells") and over["drawn"][1] == red
    bad = s["bad strength"]
    assert bad["error"] is True and bad["text"].startswith("strengths: 'x' is not a number") and bad["drawn"][1] == red
    assert s["2 strengths"]["text"] == "24 cells (max 48)"  # (1 + 3) rows x 2 x 3
    assert s["one input"]["text"] == "12 cells (max 48)"  # without_trigger unlinked: 1 prompt
    assert s["prompt line"]["error"] is True and "no CLIP is connected" in s["prompt line"]["text"]
    assert (ARTIFACTS / "web_sweep_count.png").stat().st_size > 10_000
