"""LoRA file nodes: *Convert LoRA for ComfyUI*, *Inspect LoRA* and *Load LTX LoRA (checked)*.

Files are read from ComfyUI's ``loras`` folders (Convert also from its output folder) and written to the first
``loras`` folder.
"""

from __future__ import annotations

from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ..trainer_core.comfy.lora import apply_lora_file, model_weight_shapes
from ..trainer_core.config.lorafile import ConvertLoraSettings, InspectLoraSettings, LoadLoraSettings
from ..trainer_core.lorafile import LoraFileError
from ..trainer_core.lorafile.inspect import inspect_file, report_text
from ..trainer_core.lorafile.layouts import convert_file, converted_name, holds_conversion
from ..trainer_core.paths import within_roots
from ._node import PackNode
from ._paths import lora_dirs, output_dir
from ._validate import validation_result
from ._widgets import category, section_inputs


def _source_path(source: str) -> Path:
    """The LoRA to convert: a name in the loras folders or the output folder, or a path inside them."""
    roots = [*lora_dirs(), output_dir()]
    if not source.strip():
        raise LoraFileError("source is empty: give the name of a LoRA file in models/loras")
    for candidate in within_roots(source, "source", roots, relative_to=roots):
        if candidate.is_file():
            return candidate
    raise LoraFileError(
        f"source {source.strip()!r} not found in {', '.join(str(r) for r in roots)}: give the name of a LoRA file "
        "there (in models/loras, or the output folder)"
    )


def _output_path(source: Path, output_name: str, fold_alpha: bool, dtype: str, overwrite: bool) -> tuple[Path, bool]:
    """Where the conversion goes, and whether that file already holds exactly this conversion (the same prompt queued
    again): then it is left as it is. Any other existing file is refused unless ``overwrite``."""
    name = output_name.strip() or converted_name(source, "comfy")
    if Path(name).name != name or name.startswith("."):
        raise LoraFileError(
            f"output_name {name!r} must be a plain file name (no folders); it is written to models/loras"
        )
    if not name.endswith(".safetensors"):
        name += ".safetensors"
    out = lora_dirs()[0] / name
    if not out.exists() or overwrite:
        return out, False
    if holds_conversion(out, source, "comfy", fold_alpha=fold_alpha, dtype=dtype):
        return out, True
    raise LoraFileError(
        f"{out} already exists and is not {source.name} converted with these settings; choose another output_name "
        "or enable overwrite"
    )


class ConvertLora(PackNode):
    """Any supported LoRA layout in, a ComfyUI-layout file in models/loras out."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraConvert",
            display_name="Convert LoRA for ComfyUI",
            category=category("LoRA"),
            description="Rewrites a PEFT/diffusers (transformer.), kohya/musubi (lora_unet_) or LTX-Video-Trainer "
            "LoRA with ComfyUI's key names so no key is silently skipped. The source file is never modified.",
            inputs=section_inputs(ConvertLoraSettings),
            outputs=[
                io.String.Output(display_name="lora_name", tooltip="Name of the written file in models/loras."),
                io.String.Output(display_name="report", tooltip="Inspection report of the converted LoRA."),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, source=None, output_name=None, fold_alpha=None, dtype=None, overwrite=None) -> bool | str:
        values = (source, output_name, fold_alpha, dtype, overwrite)
        if None in values:
            return True  # a linked (or missing) value is checked when the node runs
        return validation_result(lambda: _output_path(_source_path(source), *values[1:]))

    @classmethod
    def execute(cls, source, output_name, fold_alpha, dtype, overwrite) -> io.NodeOutput:
        src = _source_path(source)
        out, done = _output_path(src, output_name, fold_alpha, dtype, overwrite)
        if done:
            head = f"{out.name} already holds {src.name} converted with these settings: left as it is"
        else:
            _, parsed = convert_file(src, out, "comfy", fold_alpha=fold_alpha, dtype=dtype)
            head = f"Converted {src.name} ({parsed.layout} layout) -> {out.name}"
        report = head + "\n" + inspect_file(out)[0].text()
        return io.NodeOutput(out.name, report, ui=ui.PreviewText(report))


class InspectLora(PackNode):
    """A LoRA file in (and optionally the MODEL it is meant for); a text report out."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraInspect",
            display_name="Inspect LoRA",
            category=category("LoRA"),
            description="Reports a LoRA's base model family (LTX-2, LTX-2.3, LTX-2.5, LTXV 0.9.x or not LTX), key "
            "layout, rank and alpha per module and targeted streams; with a MODEL, which layers match and which "
            "ComfyUI would skip.",
            inputs=[
                *section_inputs(InspectLoraSettings),
                io.Model.Input("model", optional=True, tooltip="Optional: the model to check the LoRA against."),
            ],
            outputs=[io.String.Output(display_name="report", tooltip="The inspection report.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, lora_name, model=None) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        report, match = inspect_file(path, None if model is None else model_weight_shapes(model))
        text = f"{lora_name}\n{report_text(report, match)}"
        return io.NodeOutput(text, ui=ui.PreviewText(text))


class LoadLoraChecked(PackNode):
    """MODEL and LoRA in; a patched MODEL (with separate video and audio strengths) and a report out."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraLoadChecked",
            display_name="Load LTX LoRA (checked)",
            category=category("LoRA"),
            description="Applies a LoRA like LoraLoaderModelOnly, with one strength for the video stream and one for "
            "the audio stream. Refuses a LoRA made for another LTX version or with layers the model lacks (which "
            "ComfyUI would skip silently) unless 'force' is on.",
            inputs=[
                io.Model.Input("model", tooltip="The LTX model to patch (left unchanged; a patched copy is returned)."),
                *section_inputs(LoadLoraSettings),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The patched model."),
                io.String.Output(display_name="report", tooltip="What was applied, and any problem found."),
            ],
        )

    @classmethod
    def execute(cls, model, lora_name, strength_video, strength_audio, force) -> io.NodeOutput:
        patched, report = apply_lora_file(
            model,
            folder_paths.get_full_path_or_raise("loras", lora_name),
            strength_video=strength_video,
            strength_audio=strength_audio,
            force=force,
            name=lora_name,
        )
        text = report.text()
        return io.NodeOutput(patched, text, ui=ui.PreviewText(text))


NODES = [ConvertLora, InspectLora, LoadLoraChecked]
