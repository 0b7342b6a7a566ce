"""Shared by the browser tests: a ComfyUI v0.33 server started here on a free port (frontend from PyPI's
comfyui-frontend-package) with this pack linked into its ``custom_nodes``, and Debian's headless Chromium driven
over the Chrome DevTools Protocol (aiohttp's websocket client). Skips loudly without /usr/bin/chromium
(``apt-get install -y chromium``) or without a ComfyUI tree.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.comfy_boot import REPO, find_comfyui

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1600,1000",
]
ARTIFACTS = REPO / "test-artifacts"
PACK = "ltx_lora_trainer"
_NO_CHROMIUM = (
    "NO CHROMIUM at /usr/bin/chromium: the browser tests of the pack's web extensions did NOT run. "
    "Install Debian's package: apt-get update && apt-get install -y chromium"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {proc.returncode}; log:\n{log.read_text()[-4000:]}")
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"ComfyUI did not answer {url} within {timeout} s; log:\n{log.read_text()[-4000:]}")


@contextmanager
def comfy_server(base: Path, log_name: str) -> Iterator[str]:
    """ComfyUI (CPU) serving ``base`` as its ``--base-directory``, with this pack linked in; yields its URL.

    Skips the calling test without Chromium or ComfyUI. The server's log goes to ``test-artifacts/<log_name>``.
    """
    if not CHROMIUM.exists():
        warnings.warn(_NO_CHROMIUM, stacklevel=1)
        pytest.skip(_NO_CHROMIUM)
    root = find_comfyui()
    if root is None:
        pytest.skip("NO COMFYUI FOUND: the browser test did NOT run (set COMFYUI_PATH)")
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / PACK).symlink_to(REPO, target_is_directory=True)
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / log_name
    port = free_port()
    cmd = [
        sys.executable,
        str(root / "main.py"),
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base),
        "--disable-auto-launch",
    ]
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

    async def open(self, url: str, navigate: bool = True, extension: str = "ltxlora.LiveTrainingView") -> None:
        """Wait for the frontend with the pack's nodes and the web ``extension`` (navigating there first)."""
        if navigate:
            await self.send("Page.navigate", url=url)
        await self.wait_for(
            "!!(!window.__ltxloraOldPage && window.app && window.app.graph && window.LiteGraph && "
            "LiteGraph.registered_node_types['LtxLoraTrain'] && "
            f"app.extensions?.some(e => e.name === {json.dumps(extension)}))",
            what=f"the ComfyUI frontend with the pack's nodes and the extension {extension}",
        )

    async def screenshot(self, path: Path) -> None:
        r = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(r["data"]))


def with_browser(coro_fn):
    """Run ``coro_fn(browser)`` in a fresh headless Chromium."""

    async def main(profile: Path):
        import aiohttp

        proc = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = profile / "DevToolsActivePort"
            for _ in range(120):
                if port_file.exists() and port_file.read_text().strip():
                    break
                await asyncio.sleep(0.25)
            port = int(port_file.read_text().split()[0])
            targets = json.loads(get(f"http://127.0.0.1:{port}/json/list"))
            page = next(t for t in targets if t["type"] == "page")
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as conn,
            ):
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
