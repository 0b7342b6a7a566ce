"""ComfyUI entry point of the LTX-2.3 LoRA trainer pack.

ComfyUI reads ``NODE_CLASS_MAPPINGS`` (ComfyUI-Manager needs the static mapping too) and serves ``web/``.
Everything is imported relatively so the pack never shadows ComfyUI's own top-level ``nodes`` module.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .trainer_core.comfy.progress_history import register_routes

WEB_DIRECTORY = "./web"
register_routes()  # GET /ltxlora/progress for the live chart (ComfyUI's documented pattern; no-op without a server)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
