"""The sweep node's cell count: the one counting function, its GET route for the editor, and the node's
``validate_inputs`` giving the same answer (so the editor shows what queueing accepts or refuses)."""

from __future__ import annotations

import asyncio
import importlib
import json
import types
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from trainer_core.comfy import sweep_count as sc
from trainer_core.sweep.plan import SweepError, SweepPrompt, count_cells, plan_sweep, resolve_lora_files

RUN = "my_run"


@pytest.fixture
def loras(tmp_path) -> Path:
    """A ``loras`` folder holding one training run's checkpoint folder: 3 checkpoints and a state file."""
    run = tmp_path / "loras" / RUN
    run.mkdir(parents=True)
    for name in ("00100", "00200", "00300", "00300.state"):
        (run / f"{RUN}_step_{name}.safetensors").write_bytes(b"x")
    return tmp_path / "loras"


def _count(folder: Path, **kw) -> int:
    args = {
        "loras": RUN,
        "strengths": "0, 0.5, 1.0",
        "seeds": "1, 2",
        "max_cells": 48,
        "n_conditioning": 2,
        "clip": False,
        "search_dirs": [folder],
    }
    return count_cells(**{**args, **kw})


def test_count_cells_equals_the_planned_cells(loras):
    # base row once + 3 checkpoints x 2 non-zero strengths = 7 rows; x 2 prompts x 2 seeds
    assert _count(loras) == 28
    plan = plan_sweep(
        resolve_lora_files(RUN, [loras]),
        [0, 0.5, 1.0],
        [SweepPrompt("a", "trigger"), SweepPrompt("b", "other")],
        [1, 2],
        48,
    )
    assert len(plan.cells) == 28
    assert _count(loras, strengths="0.5, 1.0", seeds="1") == 12  # no base row without strength 0
    # prompt lines count once a CLIP can encode them
    lines = {"prompts": "a cat\n\nmy_trigger dog\n", "trigger": "my_trigger"}
    assert _count(loras, n_conditioning=0, clip=True, seeds="1", **lines) == 14


def test_count_cells_refuses_what_queueing_refuses(loras):
    with pytest.raises(SweepError, match="this sweep has 28 cells, more than max_cells = 20"):
        _count(loras, max_cells=20)
    with pytest.raises(SweepError, match=r"strengths: 'x' is not a number"):
        _count(loras, strengths="0, x")
    with pytest.raises(SweepError, match="negative seed"):
        _count(loras, seeds="1, -2")
    with pytest.raises(SweepError, match=r"'other_run' was not found"):
        _count(loras, loras="other_run")
    with pytest.raises(SweepError, match="no CLIP is connected"):
        _count(loras, prompts="a cat")
    with pytest.raises(SweepError, match="no prompts"):
        _count(loras, n_conditioning=0)


def _server():
    return types.SimpleNamespace(app=web.Application(), routes=web.RouteTableDef())


def _ask(handler, **params) -> tuple[int, dict]:
    query = {
        "loras": RUN,
        "strengths": "0, 0.5, 1.0",
        "seeds": "1, 2",
        "max_cells": "48",
        "n_inputs": "2",
        "clip": "0",
        "prompts": "",
        "trigger": "",
        **params,
    }
    response = asyncio.run(handler(make_mocked_request("GET", f"{sc.ROUTE}?{urlencode(query)}")))
    return response.status, json.loads(response.text)


def test_route_answers_the_count_or_the_validation_message(loras):
    server = _server()
    asked = []
    assert sc.register_routes(lambda: asked.append(1) or [loras], server) is True
    assert sc.register_routes(lambda: [loras], server) is False  # a second import registers nothing
    assert [r.path for r in server.routes] == [sc.ROUTE]
    handler = next(iter(server.routes)).handler
    assert _ask(handler) == (200, {"cells": 28, "max_cells": 48, "error": None})
    assert asked  # the LoRA folders are asked per request (folders added after start-up count too)
    assert _ask(handler, seeds="1", n_inputs="1") == (200, {"cells": 7, "max_cells": 48, "error": None})
    assert _ask(handler, prompts="a cat\na dog", clip="1", max_cells="100") == (
        200,
        {"cells": 56, "max_cells": 100, "error": None},
    )
    status, body = _ask(handler, max_cells="20")
    assert status == 200 and body["cells"] is None and body["max_cells"] == 20
    assert body["error"].startswith("this sweep has 28 cells, more than max_cells = 20")
    status, body = _ask(handler, strengths="0, x")
    assert status == 200 and body["cells"] is None and body["error"].startswith("strengths: 'x' is not a number")
    status, body = _ask(handler, n_inputs="two")
    assert status == 400 and body == {"cells": None, "max_cells": None, "error": "n_inputs: 'two' is not an integer"}


def test_no_server_no_route():
    assert sc.register_routes(lambda: []) is False  # no ComfyUI server runs in the test process


def test_node_validation_gives_the_routes_answer(comfy, loras, monkeypatch):
    import folder_paths

    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraSweep"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], {".safetensors"}))
    server = _server()
    # wired as the pack's __init__ wires it: the node module's own LoRA folders
    sc.register_routes(importlib.import_module(f"{comfy.__name__}.nodes.sweep").lora_dirs, server)
    handler = next(iter(server.routes)).handler
    # What ComfyUI passes: widget values, and None for each linked input.
    widgets = {
        "model": None,
        "loras": RUN,
        "strengths": "0, 0.5, 1.0",
        "seeds": "1, 2",
        "max_cells": 20,
        "with_trigger": None,
        "without_trigger": None,
    }
    _, body = _ask(handler, max_cells="20")
    assert "28 cells" in body["error"] and node.validate_inputs(**widgets) == body["error"]
    assert node.validate_inputs(**{**widgets, "max_cells": 28}) is True
    _, body = _ask(handler, strengths="0, x")
    assert body["error"] and node.validate_inputs(**{**widgets, "strengths": "0, x"}) == body["error"]
    one_input = {k: v for k, v in widgets.items() if k != "without_trigger"}
    _, body = _ask(handler, n_inputs="1", prompts="a cat")  # a prompt line but no CLIP
    assert "no CLIP" in body["error"] and node.validate_inputs(**one_input, prompts="a cat") == body["error"]
    # A linked strengths or prompts input has its value only when the node runs: nothing to refuse yet.
    assert node.validate_inputs(**{**widgets, "strengths": None}) is True
    assert node.validate_inputs(**{**one_input, "max_cells": 1, "prompts": None}) is True
