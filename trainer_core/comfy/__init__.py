"""Training on the LTX-2.x model ComfyUI loaded. Imported only where ComfyUI is present (nodes, tests).

No module here imports ``comfy`` at import time; ComfyUI's modules are imported inside the functions that use
them, so ``import trainer_core.comfy`` alone does not pull ComfyUI in.
"""

from .backbone import ComfyBackbone

__all__ = ["ComfyBackbone"]
