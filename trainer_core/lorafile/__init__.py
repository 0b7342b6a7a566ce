"""LoRA files: atomic writing, checked reading, key-layout conversion, inspection and checked application.

``write.save_lora_file`` / ``read.read_lora_file`` are what the training engine uses; ``metadata`` holds the
names of our metadata keys. ComfyUI is only imported lazily, inside ``apply``.
"""

from .metadata import comfy_keys, lora_metadata
from .read import LoraFileError, read_lora_file
from .write import save_lora_file

__all__ = ["LoraFileError", "comfy_keys", "lora_metadata", "read_lora_file", "save_lora_file"]
