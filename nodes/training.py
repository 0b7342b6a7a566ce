"""Training nodes: small settings nodes feeding one Train node, and a loss plot."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from comfy_api.latest import io, ui

from ..trainer_core.config import ConfigError, parse_section
from ..trainer_core.config.base import Section
from ..trainer_core.config.foreign import Translation, load_train_config
from ..trainer_core.config.train_node import LossPlotSettings, TrainNodeFiles
from ..trainer_core.config.training import (
    CheckpointSettings,
    LoraSettings,
    MemorySettings,
    OptimizationSettings,
    PreviewSettings,
    RecipeSettings,
    TrainConfig,
)
from ..trainer_core.engine.checkpoints import resolve_resume, resume_candidates
from ..trainer_core.paths import within_roots
from ..trainer_core.plots import loss_curve, non_finite_note, to_image_tensor
from . import _sockets as sockets
from ._node import PackNode
from ._paths import config_dirs, input_dir, lora_dirs
from ._validate import validation_result
from ._widgets import category, section_from_inputs, section_inputs

log = logging.getLogger(__name__)

_UNCONNECTED = object()  # an optional socket left unconnected is absent from validate_inputs; a linked one is None

# (config field of TrainConfig, section class, socket type, node id, display name)
_SETTINGS = (
    ("lora", LoraSettings, sockets.LORA_SETTINGS, "LtxLoraLoraSettings", "LTX LoRA Settings"),
    (
        "optimization",
        OptimizationSettings,
        sockets.OPTIMIZER_SETTINGS,
        "LtxLoraOptimizerSettings",
        "LTX Optimizer Settings",
    ),
    ("recipe", RecipeSettings, sockets.RECIPE_SETTINGS, "LtxLoraRecipeSettings", "LTX Training Recipe"),
    ("memory", MemorySettings, sockets.MEMORY_SETTINGS, "LtxLoraMemorySettings", "LTX Memory Settings"),
    ("preview", PreviewSettings, sockets.PREVIEW_SETTINGS, "LtxLoraPreviewSettings", "LTX Preview Settings"),
)


def _settings_node(
    section: type[Section], socket: type[io.ComfyTypeIO], node_id: str, display: str
) -> type[PackNode]:
    """A node whose widgets are one config section and whose output is that section, validated."""

    class SettingsNode(PackNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id=node_id,
                display_name=display,
                category=category("Training"),
                description=f"{display} for Train LTX LoRA. Unconnected, the Train node uses these defaults.",
                inputs=section_inputs(section),
                outputs=[socket.Output(display_name="settings")],
            )

        @classmethod
        def execute(cls, **kwargs) -> io.NodeOutput:
            return io.NodeOutput(section_from_inputs(section, kwargs))

    SettingsNode.__name__ = SettingsNode.__qualname__ = node_id
    return SettingsNode


SETTINGS_NODES = [_settings_node(s, sock, nid, name) for _, s, sock, nid, name in _SETTINGS]


def _run_dir(name: str) -> Path:
    """Where the Train node writes run ``name``: its folder in the first loras folder, beside the other runs."""
    return lora_dirs()[0] / name


def _load_yaml(value: str) -> Translation:
    """The ``config_yaml`` file: a name relative to ComfyUI's input folder, or a path inside ``config_dirs()``."""
    (path,) = within_roots(value, "config_yaml", config_dirs(), relative_to=[input_dir()])
    return load_train_config(path)


def _require_data(training_data: bool, latent: bool, conditioning: bool, yaml_data: bool) -> None:
    """Which inputs are connected (or, for the YAML, name its data folder) must give the run its clips."""
    if not (training_data or (latent and conditioning) or (yaml_data and not latent)):
        raise ConfigError(
            "Connect training_data (from Cache LTX Training Latents) or both latent and conditioning, or "
            "give a config_yaml whose data: names a cache folder."
        )


def _check_before_run(name: str | None, yaml_value: str | None, resume_from: str | None, connected: list[bool]) -> None:
    """What the Train node refuses when the prompt is queued. A linked value arrives as None: checked on running."""
    if name is not None:
        parse_section(TrainConfig, {"name": name})  # a plain run name, before any folder is made
    if yaml_value is not None:
        yaml_data = bool(yaml_value.strip()) and bool(_load_yaml(yaml_value).config.data)  # as execute decides
        _require_data(*connected, yaml_data)
    if name is not None and resume_from is not None and resume_from.strip() not in ("", "latest"):
        resume_candidates(resume_from, _run_dir(name), within=lora_dirs()[0])


def _train_config(kwargs: dict, output_dir: Path) -> TrainConfig:
    yaml_path = kwargs.get("config_yaml", "").strip()
    if yaml_path:  # a YAML file written by an earlier run, the CLI, ltx-trainer or by hand reproduces that run
        translation = _load_yaml(yaml_path)
        if translation.dialect is not None:
            log.info("%s", translation.report(yaml_path))
        base = translation.config.model_dump()
    else:
        base = {field: (kwargs.get(field) or section()).model_dump() for field, section, *_ in _SETTINGS}
        base["checkpoints"] = section_from_inputs(CheckpointSettings, kwargs).model_dump()
        base["seed"] = kwargs["seed"]
    base.update(name=kwargs["name"], output_dir=str(output_dir))  # the node decides where its files go
    return parse_section(TrainConfig, base)


class TrainLtxLora(PackNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        top = section_inputs(TrainConfig)
        settings = [
            sock.Input(field, optional=True, tooltip=f"{name} node; defaults when unconnected.")
            for field, _, sock, _, name in _SETTINGS
        ]
        return io.Schema(
            node_id="LtxLoraTrain",
            display_name="Train LTX LoRA",
            category=category("Training"),
            description="Trains a LoRA on the LTX-2.3 MODEL that ComfyUI already loaded (no second copy) and "
            "returns the MODEL with the LoRA applied, the LoRA file and the loss history.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="ComfyUI's loaded LTX-2.3 model. It is left exactly as it was."),
                sockets.TRAINING_DATA.Input(
                    "training_data", optional=True, tooltip="Cached clips from Cache LTX Training Latents."
                ),
                io.Latent.Input(
                    "latent", optional=True, tooltip="Instead of training_data: video latents to train on."
                ),
                io.Conditioning.Input(
                    "conditioning", optional=True, tooltip="With latent: the caption's LTX text-encoder conditioning."
                ),
                io.Vae.Input("vae", optional=True, tooltip="Decodes in-training previews (else a rough latent view)."),
                io.Clip.Input("clip", optional=True, tooltip="Encodes the preview prompts of LTX Preview Settings."),
                io.Vae.Input(
                    "audio_vae",
                    optional=True,
                    tooltip="Load LTXV Audio VAE: previews of a run that trains audio (recipe.audio generate) get "
                    "their sound.",
                ),
                *settings,
                *top,
                *section_inputs(CheckpointSettings),
                *section_inputs(TrainNodeFiles),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The input MODEL with the trained LoRA applied."),
                io.String.Output(display_name="lora_path", tooltip="The final LoRA file."),
                io.LossMap.Output(display_name="loss", tooltip="Loss per step."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(
        cls, name=None, config_yaml="", resume_from="", training_data=_UNCONNECTED, latent=_UNCONNECTED,
        conditioning=_UNCONNECTED,
    ) -> bool | str:
        # Only the inputs named here are passed (ComfyUI repeats a refusal under each of them).
        connected = [value is not _UNCONNECTED for value in (training_data, latent, conditioning)]
        return validation_result(lambda: _check_before_run(name, config_yaml, resume_from, connected))

    @classmethod
    def execute(cls, model, training_data=None, latent=None, conditioning=None, **kwargs) -> io.NodeOutput:
        from ..trainer_core.cache.reader import CachedData
        from ..trainer_core.comfy.lora import apply_lora_file
        from ..trainer_core.comfy.training import direct_data, train_on_model
        from ..trainer_core.engine.data_folder import training_folder
        from ..trainer_core.engine.trainer import NonFiniteLossError

        out_dir = _run_dir(kwargs["name"])
        cfg = _train_config(kwargs, out_dir)
        _require_data(training_data is not None, latent is not None, conditioning is not None, bool(cfg.data))
        if training_data is None and latent is not None:
            training_data = direct_data(latent, conditioning)
        elif training_data is None:  # the config_yaml's cache (or ltx-trainer folder)
            training_data = CachedData(training_folder(cfg.data, out_dir))
        resume_from = kwargs.get("resume_from", "").strip()
        resume = resolve_resume(resume_from, out_dir, cfg.name, within=out_dir.parent) if resume_from else None
        with torch.inference_mode(False):
            node_id = cls.hidden.unique_id if cls.hidden else None
            result = train_on_model(
                model, training_data, cfg, resume=resume, node_id=node_id, vae=kwargs.get("vae"),
                clip=kwargs.get("clip"), audio_vae=kwargs.get("audio_vae"),
            )
        if result.status == "diverged":
            raise NonFiniteLossError(result.message)  # names the step, the last good checkpoint and the fix
        patched, _ = apply_lora_file(model, result.lora_path)
        chart = to_image_tensor(loss_curve(result.losses))
        return io.NodeOutput(
            patched, str(result.lora_path), {"loss": result.losses}, ui=ui.PreviewImage(chart, cls=cls)
        )


class PlotLtxLoss(PackNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraPlotLoss",
            display_name="Plot LTX Loss",
            category=category("Training"),
            description="Loss curve (raw and smoothed) as an IMAGE.",
            inputs=[
                io.LossMap.Input("loss", tooltip="Loss history from Train LTX LoRA."),
                *section_inputs(LossPlotSettings),
            ],
            outputs=[io.Image.Output(display_name="image")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, loss, smoothing) -> io.NodeOutput:
        losses = list(loss["loss"])
        image = to_image_tensor(loss_curve(losses, beta=smoothing))
        shown = ui.PreviewImage(image, cls=cls)
        note = non_finite_note(losses)  # also written on the chart
        return io.NodeOutput(image, ui={**shown.as_dict(), "text": (note,)} if note else shown)


NODES = [*SETTINGS_NODES, TrainLtxLora, PlotLtxLoss]
