"""ComfyUI entry point of the LTX-2.3 LoRA trainer pack.

ComfyUI reads ``NODE_CLASS_MAPPINGS`` (ComfyUI-Manager needs the static mapping too) and serves ``web/``.
Everything is imported relatively so the pack never shadows ComfyUI's own top-level ``nodes`` module.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
