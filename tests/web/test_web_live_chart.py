"""The frontend in a real browser: Debian's headless Chromium against a ComfyUI v0.33 server started here (frontend
from PyPI's comfyui-frontend-package), driven over the Chrome DevTools Protocol (aiohttp's websocket client).

- the bundled workflows are listed in ComfyUI's template browser and served from the pack's ``workflows/`` folder;
- each opens in the real frontend with every node type registered, and the frontend's own ``graphToPrompt``
  gives exactly the prompt ``tests.workflow_support.ui_to_api`` gives (so the headless workflow tests run what a
  user would queue);
- a short training run (tiny LTX-2.3 checkpoint; a test-only node gives ``[1, T, 96]`` conditioning with
  ``unprocessed_ltxav_embeds`` because Gemma cannot exist here) feeds the live chart on the Train node; the page is
  reloaded mid-run and the chart comes back from the server's history and keeps receiving points. A screenshot is
  saved to ``test-artifacts/web_live_chart.png``.

Skips loudly without /usr/bin/chromium (``apt-get install -y chromium``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests import workflow_support as ws
from tests.web_support import ARTIFACTS, PACK, Browser, comfy_server, get, with_browser

pytestmark = pytest.mark.comfyui  # the server fixture finds ComfyUI itself, not through `comfy`


TRAIN_STEPS = 40

TEST_NODES = '''
import torch


class LtxLoraTestConditioning:
    """Test only: LTX-2.3 text-encoder output [1, T, 96] for the tiny checkpoint (Gemma cannot exist here)."""

    CATEGORY = "testing"
    FUNCTION = "make"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tokens": ("INT", {"default": 7, "min": 1, "max": 64})}}

    def make(self, tokens):
        text = torch.randn(1, tokens, 96, generator=torch.Generator().manual_seed(0))
        return ([[text, {"unprocessed_ltxav_embeds": True, "frame_rate": 25.0}]],)


NODE_CLASS_MAPPINGS = {"LtxLoraTestConditioning": LtxLoraTestConditioning}
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from trainer_core.ltxcore.tiny import write_tiny_checkpoint

    base = tmp_path_factory.mktemp("comfy_server")
    (base / "custom_nodes" / "ltxlora_test_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "ltxlora_test_nodes" / "__init__.py").write_text(TEST_NODES)
    write_tiny_checkpoint(base / "models" / "checkpoints" / "tiny.safetensors")
    with comfy_server(base, "web_server.log") as url:
        yield url


def test_templates_are_listed_and_served(server):
    listed = json.loads(get(f"{server}/workflow_templates"))
    assert sorted(listed.get(PACK, [])) == sorted(Path(n).stem for n in ws.BUNDLED)
    for name in ws.BUNDLED:
        served = json.loads(get(f"{server}/api/workflow_templates/{PACK}/{name}"))
        assert served == ws.load_workflow(name)
        # The template browser shows `/api/workflow_templates/<pack>/<name>.jpg` for each custom-node template.
        thumbnail = get(f"{server}/api/workflow_templates/{PACK}/{Path(name).stem}.jpg")
        assert thumbnail.startswith(b"\xff\xd8") and len(thumbnail) < 50_000, name


def test_workflows_open_and_frontend_prompt_matches_converter(server, comfy, tmp_path):
    async def check(browser: Browser):
        await browser.open(server)
        results = {}
        for name in ws.BUNDLED:
            wf = ws.load_workflow(name)
            results[name] = await browser.eval(f"""(async () => {{
                const wf = {json.dumps(wf)};
                const missing = wf.nodes.map(n => n.type).filter(t => !LiteGraph.registered_node_types[t]);
                await app.loadGraphData(wf);
                const p = await app.graphToPrompt();
                return {{missing, output: p.output, count: app.graph.nodes.length}};
            }})()""")
        return results

    results = with_browser(check)(tmp_path)
    for name, r in results.items():
        wf = ws.load_workflow(name)
        assert r["missing"] == [], f"{name}: node types unknown to the frontend: {r['missing']}"
        assert r["count"] == len(wf["nodes"]), name
        ours = ws.ui_to_api(wf)
        theirs = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in r["output"].items()}
        assert theirs == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in ours.items()}, name


BUILD_AND_QUEUE = f"""(async () => {{
    app.graph.clear();
    const add = (type, pos, values = {{}}) => {{
        const n = LiteGraph.createNode(type);
        n.pos = pos;
        app.graph.add(n);
        for (const [k, v] of Object.entries(values)) n.widgets.find(w => w.name === k).value = v;
        return n;
    }};
    const link = (a, out, b, input) => a.connect(out, b, b.findInputSlot(input));
    const ckpt = add("CheckpointLoaderSimple", [20, 20], {{ckpt_name: "tiny.safetensors"}});
    const latent = add("EmptyLTXVLatentVideo", [20, 160], {{width: 64, height: 64, length: 9}});
    const cond = add("LtxLoraTestConditioning", [20, 360]);
    const opt = add("LtxLoraOptimizerSettings", [20, 480], {{steps: {TRAIN_STEPS}, learning_rate: 0.001}});
    const mem = add("LtxLoraMemorySettings", [20, 820], {{mixed_precision: "no"}});
    const train = add("LtxLoraTrain", [420, 20], {{name: "web_test", every: {TRAIN_STEPS}}});
    train.size = [560, Math.max(train.size[1], 600)];
    link(ckpt, 0, train, "model"); link(latent, 0, train, "latent"); link(cond, 0, train, "conditioning");
    link(opt, 0, train, "optimization"); link(mem, 0, train, "memory");
    app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0];
    await app.queuePrompt(0, 1);
    return String(train.id);
}})()"""

CHART = "document.querySelector('.ltxlora-chart')"


def test_live_chart_receives_points_and_survives_reload(server, tmp_path):
    async def scenario(browser: Browser):
        await browser.open(server)
        node_id = await browser.eval(BUILD_AND_QUEUE)
        await browser.wait_for(f"Number({CHART}?.dataset.points) >= 3", what="3 points on the chart")
        before = await browser.eval(f"({{points: Number({CHART}.dataset.points), run: {CHART}.dataset.run}})")
        graph = await browser.eval("JSON.stringify(app.graph.serialize())")
        await browser.eval("window.__ltxloraOldPage = true")
        await browser.send("Page.reload")
        await browser.open(server, navigate=False)  # waits for the new page (the marker is gone with the old one)
        # The page's JS state is gone now; the same graph is opened again (as the frontend's own workflow
        # persistence would), and the chart can only get its points back from the server's history.
        await browser.eval(f"app.loadGraphData({graph}).then(() => true)")
        # What ComfyUI shows as the node's progress text (NodeProgress sends one per step, then how the run ended).
        await browser.eval("window.__texts = []; app.api.addEventListener('progress_text', "
                           "(e) => window.__texts.push(e.detail.text)); true")
        restored = await browser.wait_for(
            f"Number({CHART}?.dataset.points) >= {before['points']} && "
            f"({{points: Number({CHART}.dataset.points), run: {CHART}.dataset.run}})",
            what="the chart redrawn from the server's history after the reload")
        await browser.wait_for(f"Number({CHART}?.dataset.points) === {TRAIN_STEPS}", timeout=240,
                               what="every training step on the chart")
        text = await browser.wait_for(
            f"(t => t.includes('done') && t)({CHART}.querySelector('.ltxlora-chart-stats').textContent)",
            what="the chart's stats line saying the run is done")
        texts = await browser.wait_for("window.__texts.at(-1)?.startsWith('done') && window.__texts",
                                       what="the node's progress text saying the run is done")
        ink = await browser.eval(f"""(() => {{
            const c = {CHART}.querySelector('canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }})()""")
        await browser.eval("(() => { const n = app.graph.nodes.find(n => n.type === 'LtxLoraTrain');"
                           "app.canvas.ds.offset = [-n.pos[0] + 120, -n.pos[1] + 90]; app.canvas.ds.scale = 1;"
                           "app.graph.setDirtyCanvas(true, true); })()")
        await asyncio.sleep(1)
        await browser.screenshot(ARTIFACTS / "web_live_chart.png")
        return node_id, before, restored, text, texts, ink

    node_id, before, restored, text, texts, ink = with_browser(scenario)(tmp_path)
    history = json.loads(get(f"{server}/ltxlora/progress"))
    assert history["node"] == node_id and history["total"] == TRAIN_STEPS
    assert [p["step"] for p in history["points"]] == list(range(1, TRAIN_STEPS + 1))
    assert restored["run"] == before["run"] == history["run"]  # the same run continued after the reload
    assert text.startswith(f"step {TRAIN_STEPS}/{TRAIN_STEPS} · loss ") and "s/step" in text and "GPU" in text
    assert "compute) · done" in text
    # Once the run has ended, no ETA is left standing, on the chart or in the node's progress text.
    assert history["status"] == "completed" and "ETA" not in text
    assert "ETA" in texts[0] and texts[-1] == f"done: step {TRAIN_STEPS}/{TRAIN_STEPS}"
    walls = [p["wall_seconds"] for p in history["points"]]
    assert walls[0] is None and all(w > 0 for w in walls[1:])  # wall-clock s/step from the second step on
    assert ink > 500  # the canvas has the curves drawn on it
    assert (ARTIFACTS / "web_live_chart.png").stat().st_size > 10_000


LONG_RUN = 300_000  # far past the ~100k arguments a spread into Math.min/max can take before the stack overflows


def test_chart_draws_very_long_runs_and_stats_show_wall_clock_eta(server, tmp_path):
    """The extension's own drawChart and stats, imported from the URL the frontend loaded it from."""
    # ComfyUI serves the web folder under the pyproject name and under the folder name (which differ here); the
    # frontend loads both and the one that registers second fails, so the module is the one that imports.
    urls = [u for u in json.loads(get(f"{server}/extensions")) if u.endswith("/ltxlora_progress.js")]

    async def scenario(browser: Browser):
        await browser.open(server)
        return await browser.eval(f"""(async () => {{
            let m = null;
            for (const url of {json.dumps(urls)}) m ??= await import(url).catch(() => null);
            const points = Array.from({{length: {LONG_RUN}}}, (_, i) => ({{
                step: i + 1, loss: i === 200000 ? 5 : i === 250000 ? 0.25 : 1 + (i % 1000) / 1000, seconds: 1}}));
            const canvas = document.createElement("canvas");
            canvas.style.cssText = "width:400px;height:180px";
            document.body.append(canvas);
            const labels = [], ctx = canvas.getContext("2d"), fillText = ctx.fillText;
            ctx.fillText = function (text, ...rest) {{
                labels.push(String(text));
                return fillText.call(this, text, ...rest);
            }};
            let error = null;
            try {{
                m.drawChart(canvas, {{run: "long", total: {LONG_RUN}, points}});
            }} catch (e) {{
                error = String(e);
            }}
            const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
            let ink = 0; for (let i = 3; i < d.length; i += 4) ink += d[i] > 0;
            const point = (step, wall) => ({{step, loss: 0.5, seconds: 1, wall_seconds: wall, gpu_gib: null}});
            return {{error, labels, ink,
                     wall: m.stats({{run: "r", total: 100, points: [point(49, 1.9), point(50, 2)]}}),
                     first: m.stats({{run: "r", total: 100, points: [point(1, null)]}}),
                     cancelled: m.stats({{run: "r", total: 100, status: "cancelled",
                                          points: [point(49, 1.9), point(50, 2)]}}),
                     failed: m.stats({{run: "r", total: 100, status: "failed", points: [point(7, 2)]}})}};
        }})()""")

    r = with_browser(scenario)(tmp_path)
    assert r["error"] is None
    assert "0.250" in r["labels"] and "5.00" in r["labels"]  # the axis spans the true minimum and maximum
    assert r["ink"] > 500
    # ETA from the wall-clock s/step (checkpoints and previews included), compute time beside it
    assert r["wall"] == "step 50/100 · loss 0.5000 · 2.00 s/step (1.00 compute) · ETA 1m 40s · GPU n/a (CPU)"
    assert r["first"] == "step 1/100 · loss 0.5000 · 1.00 s/step (1.00 compute) · ETA 1m 39s · GPU n/a (CPU)"
    # After a cancel or a failure, how the run ended stands where the ETA was
    assert r["cancelled"] == (
        "step 50/100 · loss 0.5000 · 2.00 s/step (1.00 compute) · cancelled at step 50 · GPU n/a (CPU)"
    )
    assert r["failed"] == "step 7/100 · loss 0.5000 · 2.00 s/step (1.00 compute) · failed at step 7 · GPU n/a (CPU)"
