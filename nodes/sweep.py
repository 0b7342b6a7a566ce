"""Validation nodes: *LTX LoRA Sweep* (lists for ComfyUI's own samplers) and *LTX Sweep Grid*.

The sweep node emits one MODEL, positive CONDITIONING, seed and label per cell as output lists: ComfyUI runs
every downstream node (KSampler, VAE Decode...) once per cell, so the user's own generation graph renders the
sweep. The grid node takes the decoded list back (``is_input_list``) and lays it out with the numbers.
"""

from __future__ import annotations

from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ..trainer_core.config.sweep import SweepGridSettings, SweepSettings
from ..trainer_core.plots import to_image_tensor
from ..trainer_core.sweep.grid import as_audio, cell_videos, check_prefix, grid_image, grid_video
from ..trainer_core.sweep.models import row_models
from ..trainer_core.sweep.plan import (
    SweepPrompt,
    count_cells,
    parse_numbers,
    parse_seeds,
    plan_sweep,
    prompt_count,
    prompt_lines,
    resolve_lora_files,
    short,
)
from ..trainer_core.sweep.report import sweep_report
from ._node import PackNode
from ._paths import lora_dirs
from ._sockets import SWEEP
from ._validate import validation_result
from ._widgets import category, section_inputs

# The widgets whose values the cell count needs (the trigger word changes prompt kinds, not their number).
COUNTED_WIDGETS = ("loras", "strengths", "seeds", "max_cells", "prompts")


def _prompts(with_trigger, without_trigger, clip, prompts: str, trigger: str) -> list[SweepPrompt]:
    out = []
    if with_trigger is not None:
        out.append(SweepPrompt("with trigger", "trigger", with_trigger))
    if without_trigger is not None:
        out.append(SweepPrompt("without trigger", "other", without_trigger))
    lines = prompt_lines(prompts or "", trigger or "")
    prompt_count(len(out), len(lines), clip is not None)
    for line, kind in lines:
        out.append(SweepPrompt(short(line), kind, clip.encode_from_tokens_scheduled(clip.tokenize(line))))
    return out


class LoraSweep(PackNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraSweep",
            display_name="LTX LoRA Sweep",
            category=category("Validation"),
            description="Plans a strength sweep over LoRA files or checkpoints and emits one MODEL, prompt, seed "
            "and label per cell as lists: connect them to your own sampler (e.g. KSampler) and VAE Decode, then "
            "to LTX Sweep Grid. Strength 0 is the input MODEL itself, rendered once as the base row.",
            inputs=[
                io.Model.Input("model", tooltip="The LTX-2.3 MODEL to sweep the LoRAs on (left unchanged)."),
                *section_inputs(SweepSettings, only=("loras", "strengths", "seeds", "max_cells")),
                io.Conditioning.Input(
                    "with_trigger", optional=True, tooltip="Positive prompt containing the trigger word."
                ),
                io.Conditioning.Input(
                    "without_trigger",
                    optional=True,
                    tooltip="An unrelated prompt without the trigger: measures bleed.",
                ),
                io.Clip.Input("clip", optional=True, tooltip="Text encoder for the prompt lines below."),
                *section_inputs(SweepSettings, only=("prompts", "trigger")),  # optional: after the sockets
            ],
            outputs=[
                io.Model.Output(display_name="model", is_output_list=True, tooltip="MODEL per cell."),
                io.Conditioning.Output(display_name="positive", is_output_list=True, tooltip="Prompt per cell."),
                io.Int.Output(display_name="seed", is_output_list=True, tooltip="Seed per cell."),
                io.String.Output(display_name="label", is_output_list=True, tooltip="Label per cell."),
                SWEEP.Output(display_name="sweep", tooltip="The plan, for LTX Sweep Grid's numbers."),
                io.String.Output(display_name="plan", tooltip="The cell count, rows, prompts and seeds as text."),
            ],
        )

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        # Linked inputs arrive as None here: a count that needs their values is checked when the node runs.
        kw = {"prompts": "", "trigger": "", **kw}  # optional widgets may be left out of the prompt
        if any(kw.get(k) is None for k in COUNTED_WIDGETS):
            return True
        return validation_result(
            lambda: count_cells(
                kw["loras"],
                kw["strengths"],
                kw["seeds"],
                kw["max_cells"],
                n_conditioning=("with_trigger" in kw) + ("without_trigger" in kw),
                clip="clip" in kw,
                prompts=kw["prompts"],
                trigger=kw["trigger"] or "",
                search_dirs=lora_dirs(),
                within=True,
            )
        )

    @classmethod
    def execute(
        cls, model, loras, strengths, seeds, max_cells, with_trigger=None, without_trigger=None, clip=None,
        prompts="", trigger="",
    ) -> io.NodeOutput:
        plan = plan_sweep(
            resolve_lora_files(loras, lora_dirs(), within=True),
            parse_numbers(strengths, "strengths"),
            _prompts(with_trigger, without_trigger, clip, prompts, trigger),
            parse_seeds(seeds),
            max_cells,
        )
        models = row_models(model, plan)
        cells = plan.cells
        text = plan.describe()
        return io.NodeOutput(
            [models[c.row] for c in cells],
            [plan.prompts[c.prompt].conditioning for c in cells],
            [c.seed for c in cells],
            [c.label for c in cells],
            plan,
            text,
            ui=ui.PreviewText(text),
        )


class SweepGrid(PackNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraSweepGrid",
            display_name="LTX Sweep Grid",
            category=category("Validation"),
            description="Lays the decoded sweep results out as a labelled grid (first, middle and last frame per "
            "cell) with the effect/bleed numbers, and saves a grid video (mp4) to ComfyUI's output folder. With "
            "audio, the grid video plays the cells in turn, each with its sound, and each cell is also saved as "
            "its own mp4 with sound.",
            is_input_list=True,
            is_output_node=True,
            inputs=[
                io.Image.Input("images", tooltip="Decoded results of the sampler chain fed by LTX LoRA Sweep."),
                io.String.Input("labels", force_input=True, tooltip="The sweep's label output."),
                SWEEP.Input("sweep", optional=True, tooltip="The sweep's plan: rows, columns, numbers."),
                io.Audio.Input(
                    "audio", optional=True, tooltip="Decoded sound of each cell (LTXV Audio VAE Decode of an audio "
                    "LoRA's sweep): the grid video plays the cells in turn with it."
                ),
                *section_inputs(SweepGridSettings),
            ],
            outputs=[
                io.Image.Output(display_name="grid", tooltip="Labelled grid: first/middle/last frame per cell."),
                io.String.Output(display_name="table", tooltip="Effect, bleed and score per row; ranking."),
                io.String.Output(display_name="video_path", tooltip="The saved grid video."),
            ],
        )

    @classmethod
    def validate_inputs(cls, filename_prefix=(None,)) -> bool | str:
        prefix = filename_prefix[0]  # an input-list node gets every value as a list
        if prefix is None:
            return True  # linked (or missing): checked when the node runs
        return validation_result(lambda: check_prefix(prefix, folder_paths.get_output_directory()))

    @classmethod
    def execute(
        cls, images, labels, columns, fps, tile_height, filename_prefix, sweep=None, audio=None
    ) -> io.NodeOutput:
        out_dir = folder_paths.get_output_directory()
        prefix = check_prefix(filename_prefix[0], out_dir)
        report = sweep_report(images, labels, sweep[0] if sweep else None, columns[0])
        grid = to_image_tensor(grid_image(report.videos, report.layout, tile_height[0]))
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
        file = f"{name}_{counter:05}_.mp4"
        sounds = [as_audio(a) for a in audio] if audio else None
        path = grid_video(report.videos, report.layout, Path(folder) / file, fps[0], tile_height[0], sounds)
        if sounds:
            cell_videos(report.videos, labels, sounds, Path(folder), f"{name}_{counter:05}", fps[0], tile_height[0])
        shown = ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]).as_dict()
        return io.NodeOutput(grid, report.table, str(path), ui={**shown, "text": (report.table,)})


NODES = [LoraSweep, SweepGrid]
