"""Plain-PyTorch core of the LTX-2.3 LoRA trainer.

Never imports ComfyUI at module level: everything here runs headless (``python -m trainer_core``) and in tests
without ComfyUI. ComfyUI-specific code lives in ``trainer_core.comfy`` and is imported lazily by the nodes.
"""

__version__ = "0.1.0"
