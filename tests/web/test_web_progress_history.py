"""The server side of the live chart: the run history kept in the aiohttp app and its GET route."""

from __future__ import annotations

import asyncio
import json
import types

from aiohttp import web

from trainer_core.comfy import progress_history as ph


def _server():
    return types.SimpleNamespace(app=web.Application(), routes=web.RouteTableDef())


def _point(run: str, step: int) -> dict:
    return {"run": run, "node": "7", "step": step, "total": 3, "loss": 1.0 / step, "lr": 1e-4, "seconds": 0.5,
            "gpu_gib": None}


def test_route_is_registered_once_and_serves_the_current_run():
    server = _server()
    assert ph.register_routes(server) is True
    assert ph.register_routes(server) is False  # a second import registers nothing
    assert [r.path for r in server.routes] == [ph.ROUTE]
    history = ph.server_history(server)
    history.start("a", "7", 3)
    history.add(_point("a", 1))
    history.add(_point("old-run", 5))  # a late event of another run is not mixed in
    history.start("b", "7", 3)  # a new run replaces the previous one
    history.add(_point("b", 1))
    history.add(_point("b", 2))
    handler = next(iter(server.routes)).handler
    snap = json.loads(asyncio.run(handler(None)).text)
    assert (snap["run"], snap["node"], snap["total"], snap["status"]) == ("b", "7", 3, None)
    assert [p["step"] for p in snap["points"]] == [1, 2]
    history.finish("a", "completed")  # a late end of the replaced run changes nothing
    history.finish("b", "cancelled")
    assert json.loads(asyncio.run(handler(None)).text)["status"] == "cancelled"


def test_long_runs_are_thinned(monkeypatch):
    monkeypatch.setattr(ph, "MAX_POINTS", 10)
    h = ph.ProgressHistory()
    h.start("r", "1", 100)
    for step in range(1, 12):
        h.add(_point("r", step))
    assert [p["step"] for p in h.points] == [1, 3, 5, 7, 9, 11]


def test_no_server_no_history():
    assert ph.server_history(types.SimpleNamespace()) is None
