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
import base64
import json
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from tests import workflow_support as ws
from tests.comfy_boot import REPO, find_comfyui

pytestmark = pytest.mark.comfyui

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,1000"]
ARTIFACTS = REPO / "test-artifacts"
PACK = "ltx_lora_trainer"
TRAIN_STEPS = 40
_NO_CHROMIUM = ("NO CHROMIUM at /usr/bin/chromium: the browser test of the live training chart did NOT run. "
                "Install Debian's package: apt-get update && apt-get install -y chromium")

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {proc.returncode}; log:\n{log.read_text()[-4000:]}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"ComfyUI did not answer {url} within {timeout} s; log:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMIUM.exists():
        warnings.warn(_NO_CHROMIUM, stacklevel=1)
        pytest.skip(_NO_CHROMIUM)
    root = find_comfyui()
    if root is None:
        pytest.skip("NO COMFYUI FOUND: the browser test did NOT run (set COMFYUI_PATH)")
    from trainer_core.tiny import write_tiny_checkpoint

    base = tmp_path_factory.mktemp("comfy_server")
    (base / "custom_nodes" / "ltxlora_test_nodes").mkdir(parents=True)
    (base / "custom_nodes" / PACK).symlink_to(REPO, target_is_directory=True)
    (base / "custom_nodes" / "ltxlora_test_nodes" / "__init__.py").write_text(TEST_NODES)
    write_tiny_checkpoint(base / "models" / "checkpoints" / "tiny.safetensors")
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "web_server.log"
    port = _free_port()
    cmd = [sys.executable, str(root / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base), "--disable-auto-launch"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/system_stats", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, ws_conn) -> None:
        self.ws, self.next_id = ws_conn, 0

    async def send(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def eval(self, expression: str):
        r = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS error: {json.dumps(r['exceptionDetails'])[:2000]}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 120, what: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = await self.eval(expression)
            except RuntimeError as err:  # the page is between two documents (reload): ask again
                if "navigated or closed" not in str(err) and "context" not in str(err).lower():
                    raise
                value = None
            if value:
                return value
            await asyncio.sleep(0.25)
        raise TimeoutError(f"timed out after {timeout} s waiting for {what or expression}")

    async def open(self, url: str, navigate: bool = True) -> None:
        if navigate:
            await self.send("Page.navigate", url=url)
        await self.wait_for("!!(!window.__ltxloraOldPage && window.app && window.app.graph && window.LiteGraph && "
                            "LiteGraph.registered_node_types['LtxLoraTrain'] && "
                            "app.extensions?.some(e => e.name === 'ltxlora.LiveTrainingView'))",
                            what="the ComfyUI frontend with the pack's nodes and extension")

    async def screenshot(self, path: Path) -> None:
        r = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(r["data"]))


def with_browser(coro_fn):
    """Run ``coro_fn(browser)`` in a fresh headless Chromium."""

    async def main(profile: Path):
        import aiohttp

        proc = subprocess.Popen([str(CHROMIUM), *CHROMIUM_FLAGS, "--remote-debugging-port=0",
                                 f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = profile / "DevToolsActivePort"
            for _ in range(120):
                if port_file.exists() and port_file.read_text().strip():
                    break
                await asyncio.sleep(0.25)
            port = int(port_file.read_text().split()[0])
            targets = json.loads(_get(f"http://127.0.0.1:{port}/json/list"))
            page = next(t for t in targets if t["type"] == "page")
            async with aiohttp.ClientSession() as session, session.ws_connect(
                page["webSocketDebuggerUrl"], max_msg_size=0
            ) as conn:
                browser = Browser(conn)
                await browser.send("Page.enable")
                await browser.send("Runtime.enable")
                return await coro_fn(browser)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    def run(tmp_path: Path):
        return asyncio.run(main(tmp_path / "chromium-profile"))

    return run


def test_templates_are_listed_and_served(server):
    listed = json.loads(_get(f"{server}/workflow_templates"))
    assert sorted(listed.get(PACK, [])) == sorted(Path(n).stem for n in ws.BUNDLED)
    for name in ws.BUNDLED:
        served = json.loads(_get(f"{server}/api/workflow_templates/{PACK}/{name}"))
        assert served == ws.load_workflow(name)


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
        restored = await browser.wait_for(
            f"Number({CHART}?.dataset.points) >= {before['points']} && "
            f"({{points: Number({CHART}.dataset.points), run: {CHART}.dataset.run}})",
            what="the chart redrawn from the server's history after the reload")
        await browser.wait_for(f"Number({CHART}?.dataset.points) === {TRAIN_STEPS}", timeout=240,
                               what="every training step on the chart")
        text = await browser.eval(f"{CHART}.querySelector('.ltxlora-chart-stats').textContent")
        ink = await browser.eval(f"""(() => {{
            const c = {CHART}.querySelector('canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }})()""")
        await browser.eval("(() => { const n = app.graph.nodes.find(n => n.type === 'LtxLoraTrain');"
                           "app.canvas.ds.offset = [-n.pos[0] + 120, -n.pos[1] + 90]; app.canvas.ds.scale = 1;"
                           "app.graph.setDirtyCanvas(true, true); })()")
        await asyncio.sleep(1)
        await browser.screenshot(ARTIFACTS / "web_live_chart.png")
        return node_id, before, restored, text, ink

    node_id, before, restored, text, ink = with_browser(scenario)(tmp_path)
    history = json.loads(_get(f"{server}/ltxlora/progress"))
    assert history["node"] == node_id and history["total"] == TRAIN_STEPS
    assert [p["step"] for p in history["points"]] == list(range(1, TRAIN_STEPS + 1))
    assert restored["run"] == before["run"] == history["run"]  # the same run continued after the reload
    assert text.startswith(f"step {TRAIN_STEPS}/{TRAIN_STEPS} · loss ") and "s/step" in text and "GPU" in text
    assert ink > 500  # the canvas has the curves drawn on it
    assert (ARTIFACTS / "web_live_chart.png").stat().st_size > 10_000
