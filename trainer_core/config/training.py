"""Training settings: one schema for the Train node's widgets, YAML files and ``python -m trainer_core train``.

Defaults follow Lightricks' reference templates (rank 32, alpha 32, lr 1e-4, batch 1, checkpoint every 250)
except ``steps`` (1500, the design card's default) and the additions the reference lacks (warmup, caption
dropout). Each run writes the resolved settings as ``config.yaml`` beside its checkpoints; loading that file
reproduces the run.
"""

from __future__ import annotations

import logging
import textwrap
from typing import Any, Literal

from pydantic import field_validator, model_validator

from .base import Section, dump_yaml, knob

log = logging.getLogger(__name__)


class ModelSettings(Section):
    """Which model to train (headless CLI only: inside ComfyUI the MODEL input is used)."""

    checkpoint: str | None = knob(
        None, "Path to the LTX-2.3 single-file checkpoint (.safetensors). CLI only.", widget=False
    )
    dtype: Literal["bfloat16", "float32"] = knob(
        "bfloat16", "Dtype of the frozen base weights (CLI only).", widget=False
    )
    device: str = knob(
        "auto",
        "Torch device for headless training: auto (cuda when a GPU is present, else cpu), cuda, cuda:1 or cpu. The "
        "run's config.yaml records the device used (CLI only).",
        widget=False,
    )

    def resolved_device(self, cuda_available: bool) -> str:
        """``device`` with ``auto`` resolved: cuda when a GPU is present, else cpu."""
        if self.device != "auto":
            return self.device
        return "cuda" if cuda_available else "cpu"


class LoraSettings(Section):
    rank: int = knob(32, "LoRA rank: capacity of the adapter. 16-64 is typical; the reference uses 32.", ge=1, le=1024)
    alpha: float = knob(32.0, "LoRA alpha. The update is scaled by alpha/rank; alpha = rank gives scale 1.", gt=0)
    dropout: float = knob(0.0, "Dropout on the LoRA input during training (0 = off).", ge=0.0, lt=1.0)
    targets: Literal["all_attention", "video_attention_ffn", "video_attention", "custom"] = knob(
        "all_attention",
        "Layers to adapt. all_attention: q/k/v/out of all six attentions (reference default). "
        "video_attention_ffn: video attention + feed-forward (reference IC-LoRA preset). "
        "video_attention: video self/text attention only (audio untouched). custom: use custom_targets.",
    )
    custom_targets: str = knob(
        "", "Comma-separated module patterns for targets=custom, e.g. 'attn1.to_q, attn1.to_v, ff.net.2'."
    )

    def custom_list(self) -> list[str]:
        return [t.strip() for t in self.custom_targets.split(",") if t.strip()]


class OptimizationSettings(Section):
    steps: int = knob(1500, "Optimizer steps to train.", ge=1, le=1_000_000)
    learning_rate: float = knob(1e-4, "Peak learning rate.", gt=0.0, le=1.0)
    batch_size: int = knob(1, "Clips per step (clips of the same bucket are batched together).", ge=1, le=64)
    gradient_accumulation: int = knob(1, "Micro-batches accumulated per optimizer step.", ge=1, le=256)
    optimizer: Literal["adamw", "adamw8bit"] = knob(
        "adamw", "AdamW (torch), or 8-bit AdamW from bitsandbytes (needs bitsandbytes installed)."
    )
    weight_decay: float = knob(0.01, "AdamW weight decay (torch default 0.01, as the reference).", ge=0.0, le=1.0)
    scheduler: Literal["constant", "linear", "cosine"] = knob(
        "linear", "Learning-rate schedule after warmup: linear decays to 10% (reference), cosine to 0."
    )
    warmup_steps: int = knob(0, "Linear warmup steps from 0 to the peak learning rate.", ge=0)
    max_grad_norm: float = knob(1.0, "Clip the gradient norm to this value (0 = no clipping).", ge=0.0)


# Presets of recipe.preset: section -> field -> value. ltx-trainer's configs/v2v_ic_lora.yaml template.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "custom": {},
    "ic_lora": {
        "recipe": {"reference_p": 1.0, "first_frame_p": 0.2, "audio": "off"},
        "lora": {"targets": "video_attention_ffn"},
    },
}


def apply_preset(data: dict[str, Any], preset: Any, section: str, schema: type[Section]) -> dict[str, Any]:
    """``data`` (the raw values of ``section``, of class ``schema``) with ``preset``'s values where a field is absent
    or at its default: one rule for node widgets (all always set) and YAML (only the keys written)."""
    values = PRESETS.get(preset, {}).get(section, {}) if isinstance(preset, str) else {}
    defaults = {k: schema.model_fields[k].default for k in values}
    filled = {k: v for k, v in values.items() if data.get(k, defaults[k]) == defaults[k] and v != defaults[k]}
    if filled:
        log.info("recipe.preset %s sets %s", preset, ", ".join(f"{section}.{k} {v}" for k, v in filled.items()))
    return {**data, **filled}


def _train_audio_alias(data: dict[str, Any]) -> dict[str, Any]:
    """``train_audio`` (before recipe.audio existed): true = generate, false = off, with a deprecation warning."""
    if "train_audio" not in data:
        return data
    data = dict(data)
    old = data.pop("train_audio")
    if "audio" in data:
        raise ValueError(
            f"recipe.train_audio ({old!r}) and recipe.audio ({data['audio']!r}) are both set: train_audio is the "
            "deprecated name of recipe.audio; remove train_audio"
        )
    if not isinstance(old, bool):
        raise ValueError(f"recipe.train_audio = {old!r}: must be true or false (better: use recipe.audio)")
    data["audio"] = "generate" if old else "off"
    log.warning("recipe.train_audio is deprecated: read as recipe.audio: %s (set recipe.audio instead)",
                data["audio"])
    return data


class RecipeSettings(Section):
    timestep_sampling: Literal["shifted_logit_normal", "uniform"] = knob(
        "shifted_logit_normal",
        "How noise levels are drawn: the reference's token-count-shifted logit-normal, or uniform.",
    )
    first_frame_p: float = knob(
        0.0,
        "Probability of first-frame (image-to-video) conditioning per clip: frame 0 stays clean and is not "
        "in the loss. Reference: 0 for text-to-video, 0.5 for image-to-video LoRAs.",
        ge=0.0,
        le=1.0,
    )
    caption_dropout: float = knob(
        0.0, "Probability of training on the empty caption instead of the clip's (helps CFG).", ge=0.0, le=1.0
    )
    reference_p: float = knob(
        0.0,
        "IC-LoRA (video-to-video control) when above 0: the probability per batch of prepending each clip's "
        "reference latents (manifest column reference_video) to its video tokens, clean, at timestep 0 and not in "
        "the loss. ltx-trainer's IC-LoRA template uses 1.0.",
        ge=0.0,
        le=1.0,
    )
    audio: Literal["auto", "generate", "condition", "off"] = knob(
        "auto",
        "The audio stream. generate: noised, in the loss (the LoRA learns audio). condition: fed clean at "
        "timestep 0, not in the loss (audio-to-video). off: not fed, and no audio layers in the LoRA. auto: "
        "generate when every clip has audio latents, else off (a log line says which).",
    )
    video: Literal["generate", "condition"] = knob(
        "generate",
        "The video stream. generate: noised, in the loss. condition: fed clean at timestep 0, not in the loss "
        "(video-to-audio; needs recipe.audio generate).",
    )
    preset: Literal["custom", "ic_lora"] = knob(
        "custom",
        "custom: the values set here. ic_lora: ltx-trainer's IC-LoRA template (v2v_ic_lora): reference_p 1.0, "
        "first_frame_p 0.2, audio off, and lora.targets video_attention_ffn, each where the setting is at its "
        "default; a value you changed is kept.",
    )

    @model_validator(mode="before")
    @classmethod
    def _alias_and_preset(cls, data: Any) -> Any:
        """Read the deprecated ``train_audio``, then fill the preset's recipe values (see ``apply_preset``)."""
        if not isinstance(data, dict):
            return data
        data = _train_audio_alias(data)
        return apply_preset(data, data.get("preset"), "recipe", cls)

    @model_validator(mode="after")
    def _something_generated(self) -> RecipeSettings:
        if self.video == "condition" and self.audio in ("off", "condition"):
            raise ValueError(
                f"recipe.video is 'condition' and recipe.audio is {self.audio!r}: nothing would be generated, so "
                "there is nothing to learn; set recipe.audio: generate (video-to-audio) or recipe.video: generate"
            )
        return self


class CheckpointSettings(Section):
    every: int = knob(250, "Save a checkpoint every N steps (and always at the end).", ge=1)
    keep_last: int = knob(0, "Keep only the newest N checkpoints (0 = keep all).", ge=0)


class MemorySettings(Section):
    gradient_checkpointing: bool = knob(True, "Recompute each block in backward: far less memory, ~25% slower.")
    mixed_precision: Literal["bf16", "no"] = knob("bf16", "bf16 autocast for the forward/backward (no = float32).")
    compile_blocks: Literal["auto", "on", "off"] = knob(
        "auto",
        "torch.compile each transformer block: fused kernels, much faster steps on a GPU; the first step compiles "
        "for a minute or two. auto = on CUDA when torch.compile works there, for the blocks whose weights are all "
        "on the GPU, which with gradient checkpointing includes the blocks streamed from RAM (they are brought in "
        "whole); on = every block, also those left to ComfyUI's per-layer copies (ComfyUI models only).",
    )


class DistributedSettings(Section):
    """How several processes share the work under ``torchrun`` (headless CLI only: ComfyUI trains in one process)."""

    strategy: Literal["ddp", "fsdp"] = knob(
        "ddp",
        "Under torchrun --nproc_per_node N: ddp = every process holds the whole base model; fsdp = the frozen base "
        "weights are split over the processes (FSDP2, torch >= 2.6), about 1/N each, for clips that do not fit "
        "beside the whole model. Both train the same LoRA. One process: no effect (CLI only).",
        widget=False,
    )


class PreviewSettings(Section):
    """In-training previews: ComfyUI's own sampler in the Train node; headless ``train``: the pack's Euler sampler
    and the checkpoint's VAE (``trainer_core.ltxcore.previews``)."""

    every: int = knob(0, "Render previews every N steps (0 = off). Each costs a short sampling run.", ge=0)
    width: int = knob(256, "Preview width in pixels (multiple of 32).", ge=32, le=2048, multiple_of=32)
    height: int = knob(256, "Preview height in pixels (multiple of 32).", ge=32, le=2048, multiple_of=32)
    frames: int = knob(9, "Preview length in frames (8n+1: 1, 9, 17, 25...).", ge=1, le=257)
    steps: int = knob(20, "Sampler steps (Euler, LTX scheduler) per preview.", ge=1, le=200)
    cfg: float = knob(1.0, "Guidance scale; above 1 uses zeroed conditioning as the negative.", ge=1.0, le=30.0)
    seed: int = knob(42, "Noise seed of the previews: the same every time, so previews are comparable.", ge=0)
    prompts: str = knob(
        "",
        "Preview prompts, one per line (Train node: needs its clip input; CLI: --text-encoder unless the cache "
        "used the stand-in); empty = the first training captions.",
    )
    count: int = knob(1, "How many prompts (or training captions) to preview each time.", ge=1, le=8)

    @model_validator(mode="after")
    def _check(self) -> PreviewSettings:
        if (self.frames - 1) % 8:
            raise ValueError(f"preview.frames ({self.frames}) must be 8n+1 (1, 9, 17, 25, ...)")
        return self


class TrainConfig(Section):
    """A complete training run."""

    seed: int = knob(42, "Seed for noise, sigma, shuffling and LoRA init: same seed, same run.", ge=0)
    output_dir: str = knob("runs/ltx_lora", "Folder for checkpoints, config.yaml and the loss history.", widget=False)
    name: str = knob("ltx_lora", "Run name: checkpoint files are <name>_step_00250.safetensors.")
    data: str | None = knob(None, "Cache folder made by the cache step (CLI only).", widget=False)
    model: ModelSettings = ModelSettings()
    lora: LoraSettings = LoraSettings()
    optimization: OptimizationSettings = OptimizationSettings()
    recipe: RecipeSettings = RecipeSettings()
    checkpoints: CheckpointSettings = CheckpointSettings()
    memory: MemorySettings = MemorySettings()
    distributed: DistributedSettings = DistributedSettings()
    preview: PreviewSettings = PreviewSettings()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # The name makes file names and, in the Train node, the run's folder inside ComfyUI's loras folder: a
        # separator, '..' or a drive would put files somewhere else.
        if value in ("", ".", "..") or value.strip() != value or any(c in value for c in "/\\:\0"):
            raise ValueError(
                "the run name must be a plain name without '/', '\\', ':', surrounding spaces, and not '.' or '..' "
                "(it names the checkpoint files and, in the Train node, the run's folder inside ComfyUI's loras "
                "folder): use e.g. 'my_style_lora'; set output_dir (CLI) to choose the folder"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _preset_lora(cls, data: Any) -> Any:
        """recipe.preset's LoRA values (the IC-LoRA template's targets), by the rule of ``apply_preset``."""
        if not isinstance(data, dict):
            return data
        recipe, lora = data.get("recipe"), data.get("lora")
        preset = recipe.preset if isinstance(recipe, RecipeSettings) else (recipe or {}).get("preset")
        if not PRESETS.get(preset if isinstance(preset, str) else "", {}).get("lora"):
            return data
        if isinstance(lora, LoraSettings):  # also on assignment (validate_assignment): keep it a LoraSettings
            raw = lora.model_dump()
            filled = apply_preset(raw, preset, "lora", LoraSettings)
            return data if filled == raw else {**data, "lora": LoraSettings.model_validate(filled)}
        if lora is not None and not isinstance(lora, dict):
            return data  # not a mapping: the field's own validation names it
        return {**data, "lora": apply_preset(lora or {}, preset, "lora", LoraSettings)}

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.lora.targets == "custom" and not self.lora.custom_list():
            raise ValueError("lora.targets is 'custom' but lora.custom_targets is empty")
        if self.optimization.warmup_steps >= self.optimization.steps:
            raise ValueError(
                f"optimization.warmup_steps ({self.optimization.warmup_steps}) must be below "
                f"optimization.steps ({self.optimization.steps})"
            )
        return self


# What `python -m trainer_core train` needs that a Train node run may not have had (it gets both over sockets).
DATA_UNSET = (
    "data is not set (a Train node run on latents wired straight into the node has no cache folder to record): "
    "to train headless, cache the clips with Cache LTX Training Latents or `python -m trainer_core cache` and set "
    "data: to that folder"
)
CHECKPOINT_UNSET = (
    "model.checkpoint is not set (a Train node run records it only when its MODEL came from ComfyUI's checkpoint "
    "loader): to train headless, set model.checkpoint: to the LTX-2.3 single-file .safetensors"
)


def train_config_yaml(cfg: TrainConfig) -> str:
    """``config.yaml`` of a run: the resolved settings, headed by a comment on each setting the CLI needs but lacks."""
    notes = [DATA_UNSET] * (not cfg.data) + [CHECKPOINT_UNSET] * (not cfg.model.checkpoint)
    comments = (textwrap.fill(note + ".", 118, initial_indent="# ", subsequent_indent="# ") for note in notes)
    return "".join(line + "\n" for line in comments) + dump_yaml(cfg)
