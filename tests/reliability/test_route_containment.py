"""The sweep-count route looks only inside ComfyUI's loras folders and answers a path outside them exactly as it
answers a missing file, whether or not something exists there: no file-existence oracle over HTTP."""

from __future__ import annotations

import asyncio
import json
import types
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from trainer_core.comfy import sweep_count as sc
from trainer_core.sweep.plan import count_cells


def _checkpoints(folder: Path, name: str) -> None:
    folder.mkdir(parents=True)
    for step in ("00100", "00200"):
        (folder / f"{name}_step_{step}.safetensors").write_bytes(b"x")


@pytest.fixture
def handler(tmp_path):
    """The route over a loras folder with run 'mine'; a run 'secret' exists outside it, and a symlink to it inside."""
    loras = tmp_path / "loras"
    _checkpoints(loras / "mine", "mine")
    _checkpoints(tmp_path / "private" / "secret", "secret")
    (loras / "link").symlink_to(tmp_path / "private" / "secret")
    server = types.SimpleNamespace(app=web.Application(), routes=web.RouteTableDef())
    sc.register_routes(lambda: [loras], server)
    return next(iter(server.routes)).handler


def _ask(handler, loras: str) -> tuple[int, dict]:
    query = {"loras": loras, "strengths": "0.5, 1.0", "seeds": "1", "max_cells": "48", "n_inputs": "1", "clip": "0"}
    response = asyncio.run(handler(make_mocked_request("GET", f"{sc.ROUTE}?{urlencode(query)}")))
    return response.status, json.loads(response.text)


def _masked(answer: tuple[int, dict], entry: str) -> tuple[int, dict]:
    status, body = answer
    return status, {**body, "error": body["error"].replace(repr(entry), "<entry>")}


@pytest.mark.parametrize(("existing", "missing"), [
    ("{tmp}/private/secret", "{tmp}/private/gone"),
    ("{tmp}/private/secret/secret_step_00100.safetensors", "{tmp}/private/secret/secret_step_00900.safetensors"),
    ("../private/secret", "../private/gone"),
    ("link", "no_such_run"),
])
def test_outside_answers_like_missing(handler, tmp_path, existing, missing):
    existing, missing = existing.format(tmp=tmp_path), missing.format(tmp=tmp_path)
    outside, absent = _ask(handler, existing), _ask(handler, missing)
    assert outside[0] == 200 and outside[1]["cells"] is None and "was not found" in outside[1]["error"]
    assert _masked(outside, existing) == _masked(absent, missing)
    assert "secret_step" not in json.dumps(_masked(outside, existing)[1])  # nothing found there is listed


def test_inside_is_still_counted(handler, tmp_path):
    assert _ask(handler, "mine") == (200, {"cells": 4, "max_cells": 48, "error": None})
    inside = str(tmp_path / "loras" / "mine" / "mine_step_00100.safetensors")
    assert _ask(handler, inside) == (200, {"cells": 2, "max_cells": 48, "error": None})


def test_the_node_itself_still_takes_absolute_paths(tmp_path):
    """Queueing a workflow names files on the server by choice; only the route (answering anyone) is confined."""
    _checkpoints(tmp_path / "elsewhere" / "run", "run")
    cells = count_cells(str(tmp_path / "elsewhere" / "run"), "1.0", "1", 48, n_conditioning=1, clip=False,
                        search_dirs=[tmp_path / "loras"])
    assert cells == 2
