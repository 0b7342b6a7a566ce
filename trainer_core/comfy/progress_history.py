"""The current training run's progress, kept on ComfyUI's server so the canvas chart survives a page reload.

The Train node's ``NodeProgress`` records each step here as well as sending the ``ltxlora.progress`` event; the
web extension (``web/ltxlora_progress.js``) reads ``GET /ltxlora/progress`` when the page loads and then follows
the events. The history lives in the aiohttp application's own state (``app[HISTORY_KEY]``), created once when the
pack registers its route in ComfyUI's documented way (``PromptServer.instance.routes``) while ComfyUI imports the
pack, so nothing is module-level and a second import registers nothing. Imports ComfyUI's ``server`` lazily.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

ROUTE = "/ltxlora/progress"
MAX_POINTS = 5000  # beyond this every other point is dropped, so a long run stays a small JSON


@dataclass
class ProgressHistory:
    """One run at a time: the newest run replaces the previous one."""

    run: str | None = None
    node: str | None = None
    total: int = 0
    points: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None  # None while running, then how it ended ("completed", "cancelled", ...)

    def start(self, run: str, node: str | None, total: int) -> None:
        """Forget the previous run and start recording ``run``."""
        self.run, self.node, self.total, self.points, self.status = run, node, total, [], None

    def finish(self, run: str, status: str) -> None:
        """Record how ``run`` ended (ignored when it is no longer the current run)."""
        if run == self.run:
            self.status = status

    def add(self, point: dict[str, Any]) -> None:
        """Record one step's event payload (ignored when it belongs to another run)."""
        if point.get("run") != self.run:
            return
        self.points.append(point)
        if len(self.points) > MAX_POINTS:
            self.points = self.points[::2]

    def snapshot(self) -> dict[str, Any]:
        """What the route returns: the run id, its node, step total, recorded points and how it ended (or None)."""
        return {
            "run": self.run, "node": self.node, "total": self.total, "points": list(self.points), "status": self.status
        }


HISTORY_KEY = web.AppKey("ltxlora_progress_history", ProgressHistory)


def prompt_server() -> Any:
    """ComfyUI's running ``PromptServer``, or None (no server when ComfyUI is used as a library)."""
    try:
        from server import PromptServer
    except ImportError:  # ComfyUI used as a library (tests, CLI): no server, no UI
        return None
    return getattr(PromptServer, "instance", None)


def server_history(server: Any = None) -> ProgressHistory | None:
    """The history kept on ``server`` (default: ComfyUI's running server), or None without one."""
    server = server or prompt_server()
    app = getattr(server, "app", None)
    return None if app is None else app.get(HISTORY_KEY)


def register_routes(server: Any = None) -> bool:
    """Add ``GET /ltxlora/progress`` to ComfyUI's server once; False when there is no server or it exists."""
    server = server or prompt_server()
    if server is None or HISTORY_KEY in server.app:
        return False
    history = ProgressHistory()
    server.app[HISTORY_KEY] = history

    async def get_progress(request: web.Request) -> web.Response:
        return web.json_response(history.snapshot())

    server.routes.get(ROUTE)(get_progress)
    log.debug("registered %s", ROUTE)
    return True
