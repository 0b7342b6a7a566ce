"""ComfyUI entry point of the LTX-2.3 LoRA trainer pack.

ComfyUI reads ``NODE_CLASS_MAPPINGS`` (ComfyUI-Manager needs the static mapping too) and serves ``web/``.
Everything is imported relatively so the pack never shadows ComfyUI's own top-level ``nodes`` module.
"""

import importlib.util

WEB_DIRECTORY = "./web"

if importlib.util.find_spec("comfy_api") is None:
    # Imported outside ComfyUI (pytest run at the repo root imports this folder as a package): no nodes to give.
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .nodes._paths import lora_dirs
    from .trainer_core.comfy import progress_history, sweep_count

    # ComfyUI's documented pattern for routes (PromptServer.instance.routes); both are no-ops without a server.
    progress_history.register_routes()  # GET /ltxlora/progress for the live chart
    sweep_count.register_routes(lora_dirs)  # GET /ltxlora/sweep_count for the sweep node's live cell count

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
