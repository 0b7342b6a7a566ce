"""``GET /ltxlora/sweep_count``: the LTX LoRA Sweep node's cell count, shown in the editor before anything is queued.

The web extension (``web/ltxlora_sweep_count.js``) sends the node's widget values, the number of linked
conditioning inputs and whether a CLIP is linked; the answer comes from ``count_cells``, the function the node's
``validate_inputs`` calls, so the editor shows what queueing would accept or refuse. The route looks only inside
ComfyUI's loras folders: a path outside them (absolute, ``..``, a symlink out) gets the answer of a missing file,
whether or not it exists, so the route tells nobody which files exist elsewhere. Registered like
``progress_history``'s route, while ComfyUI imports the pack.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from ..sweep.plan import SweepError, count_cells
from .progress_history import prompt_server

log = logging.getLogger(__name__)

ROUTE = "/ltxlora/sweep_count"


def _int(query: Mapping[str, str], name: str) -> int:
    value = query.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an integer") from None


def count_response(query: Mapping[str, str], lora_dirs: Sequence[Path]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for the route's query: the count, or the message queueing the node would give."""
    try:
        max_cells, n_inputs = _int(query, "max_cells"), _int(query, "n_inputs")
    except ValueError as err:  # not the node's widgets: a malformed request
        return 400, {"cells": None, "max_cells": None, "error": str(err)}
    try:
        cells = count_cells(
            query.get("loras", ""),
            query.get("strengths", ""),
            query.get("seeds", ""),
            max_cells,
            n_conditioning=n_inputs,
            clip=query.get("clip") == "1",
            prompts=query.get("prompts", ""),
            trigger=query.get("trigger", ""),
            search_dirs=lora_dirs,
            confined=True,  # a request from the network sees only ComfyUI's loras folders
        )
    except SweepError as err:
        return 200, {"cells": None, "max_cells": max_cells, "error": str(err)}
    return 200, {"cells": cells, "max_cells": max_cells, "error": None}


def register_routes(lora_dirs: Callable[[], Sequence[Path]], server: Any = None) -> bool:
    """Add the route to ComfyUI's server once; False when there is no server or it is there already.

    ``lora_dirs`` is asked on every request, so LoRA folders added after start-up are searched too.
    """
    server = server or prompt_server()
    if server is None or any(getattr(r, "path", None) == ROUTE for r in server.routes):
        return False

    async def get_sweep_count(request: web.Request) -> web.Response:
        status, body = count_response(request.query, lora_dirs())
        return web.json_response(body, status=status)

    server.routes.get(ROUTE)(get_sweep_count)
    log.debug("registered %s", ROUTE)
    return True
