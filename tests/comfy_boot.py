"""Find and boot a real ComfyUI v0.33 as a library, for the integration tests.

Search order (the project's convention): $COMFYUI_PATH, the ComfyUI that contains this pack
(``ComfyUI/custom_nodes/<pack>``), ``~/.cache/comfyui-v0.33``. Booting follows ComfyUI's own CPU test recipe:
parse ``--cpu`` before ``comfy.model_management`` is imported, import the top-level ``utils`` package before
``nodes``, then load the built-in extra nodes and this pack through ComfyUI's own custom-node loader.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def find_comfyui() -> Path | None:
    candidates = [os.environ.get("COMFYUI_PATH"), str(REPO.parents[1]), str(Path.home() / ".cache/comfyui-v0.33")]
    for c in candidates:
        if c and (Path(c) / "comfy" / "model_patcher.py").is_file():
            return Path(c)
    return None


def boot(root: Path) -> ModuleType:
    """Import ComfyUI from ``root`` in CPU mode, load its extra nodes and this pack; return the pack module."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    argv = sys.argv
    sys.argv = [argv[0], "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
    finally:
        sys.argv = argv
    import comfy.model_management
    import utils.install_util  # noqa: F401 - the top-level utils package must win over comfy/utils.py

    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    loaded = asyncio.run(nodes.load_custom_node(str(REPO), module_parent="custom_nodes"))
    if not loaded:
        raise RuntimeError(f"ComfyUI at {root} failed to import the pack at {REPO}; see the log above")
    logging.getLogger(__name__).info("ComfyUI booted from %s", root)
    return sys.modules[str(REPO).replace(".", "_x_")]
