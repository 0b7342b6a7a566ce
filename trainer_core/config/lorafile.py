"""Settings of the LoRA file nodes: *Convert LoRA for ComfyUI*, *Inspect LoRA* and *Load LTX LoRA (checked)*.

``lora_name`` fields list the files of ComfyUI's ``loras`` folder as their choices (read when the node is shown);
outside ComfyUI they are plain file names.
"""

from __future__ import annotations

from typing import Literal

from .base import Section, knob

# The weight dtypes a converted file can be written in; trainer_core.lorafile.layouts.DTYPES maps them to torch.
LoraDtype = Literal["keep", "float32", "bfloat16", "float16"]

_STRENGTH = {"ge": -10.0, "le": 10.0, "ui": {"step": 0.01}}


class ConvertLoraSettings(Section):
    """Which LoRA to rewrite in ComfyUI's key layout, and how."""

    source: str = knob(
        "", "The LoRA file: its name in models/loras or ComfyUI's output folder, or its path inside one of them."
    )
    output_name: str = knob("", "File name to write in models/loras; empty: <source>_comfy.safetensors.")
    fold_alpha: bool = knob(False, "Multiply alpha/rank into the weights instead of keeping .alpha tensors.")
    dtype: LoraDtype = knob("keep", "Weight dtype of the new file.")
    overwrite: bool = knob(False, "Replace an existing file of that name.")


class InspectLoraSettings(Section):
    """The LoRA file to report on."""

    lora_name: str = knob(..., "LoRA file in models/loras.", ui={"choices_from": "loras"})


class LoadLoraSettings(Section):
    """The LoRA file to apply, its strength per stream, and whether a mismatch is overridden."""

    lora_name: str = knob(..., "LoRA file in models/loras (any supported layout).", ui={"choices_from": "loras"})
    strength_video: float = knob(
        1.0,
        "Strength on the video stream: video self/text attention, video FFN and the audio-to-video attention.",
        **_STRENGTH,
    )
    strength_audio: float = knob(
        1.0,
        "Strength on the audio stream: audio self/text attention, audio FFN and the video-to-audio attention.",
        **_STRENGTH,
    )
    force: bool = knob(False, "Apply the matching layers even if the LoRA is for another model.")
