"""ComfyUI's folders the nodes read user-named files from, asked on every call (extra_model_paths.yaml, a launcher's
flags or a test may change them)."""

from __future__ import annotations

from pathlib import Path

import folder_paths


def lora_dirs() -> list[Path]:
    """ComfyUI's ``loras`` folders: relative LoRA names are looked up there (the Train node writes its runs into the
    first one)."""
    return [Path(p) for p in folder_paths.get_folder_paths("loras")]


def output_dir() -> Path:
    return Path(folder_paths.get_output_directory())


def input_dir() -> Path:
    return Path(folder_paths.get_input_directory())


def config_dirs() -> list[Path]:
    """Where the Train node's ``config_yaml`` may lie: ComfyUI's input, user and output folders, and the loras
    folders, where each run writes its ``config.yaml``."""
    return [input_dir(), Path(folder_paths.get_user_directory()), output_dir(), *lora_dirs()]
