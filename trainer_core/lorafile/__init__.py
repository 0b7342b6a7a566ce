"""LoRA files: atomic writing, checked reading, key-layout conversion, inspection, and the checks before applying.

``write.save_lora_file`` / ``read.read_lora_file`` are what the training engine uses; ``metadata`` holds the
names of our metadata keys; ``fit`` decides what of a LoRA may be applied to a model. Nothing here imports
ComfyUI: ``trainer_core.comfy.lora`` patches ComfyUI's MODEL.
"""

from .metadata import comfy_keys, lora_metadata
from .read import LoraFileError, read_lora_file
from .write import save_lora_file

__all__ = ["LoraFileError", "comfy_keys", "lora_metadata", "read_lora_file", "save_lora_file"]
