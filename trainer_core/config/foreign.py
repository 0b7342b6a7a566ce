"""ltx-trainer v1.x configs and the LTX-2 LoRA tutorial's YAML, read as this trainer's ``TrainConfig``.

``RULES`` is the one mapping table: ``config check``, ``config translate``, ``train``, the Train node's
``config_yaml`` and the README's "Coming from ltx-trainer" table all read it. Each rule names a foreign key, the
setting it becomes (or "no equivalent" and why) and how its value converts; a value this trainer cannot honour
(full fine-tuning, fp16, IC-LoRA conditions, ...) is refused with the reason rather than dropped. A foreign config
gets ltx-trainer's own defaults for the keys it omits (``FOREIGN_DEFAULTS``), so it trains as it would there.
A file that uses no foreign key is validated as a native config, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import ConfigError, Section, parse_section, read_mapping
from .training import TrainConfig

LTX_TRAINER = "ltx-trainer"
TUTORIAL = "tutorial"
BOTH = "both"


class Refused(ValueError):
    """A foreign value this trainer cannot honour; its message says why and what to do."""


Convert = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """One foreign key. ``source`` is dotted; a leading ``*.`` matches it at the top level or in any section.

    ``convert`` turns the value into ``{project key: value}`` (empty for "no equivalent") or raises ``Refused``.
    """

    source: str
    origin: str
    target: str  # the project keys, or "" for no equivalent
    note: str
    convert: Convert

    def matches(self, path: tuple[str, ...]) -> bool:
        if self.source.startswith("*."):
            return len(path) <= 2 and path[-1] == self.source[2:]
        return ".".join(path) == self.source


def _to(key: str, fn: Callable[[Any], Any] = lambda v: v) -> Convert:
    return lambda value: {key: fn(value)}


def _drop(value: Any) -> dict[str, Any]:
    return {}


def _only(allowed: tuple[Any, ...], why: str) -> Convert:
    def convert(value: Any) -> dict[str, Any]:
        if value not in allowed:
            raise Refused(why)
        return {}

    return convert


def _choice(key: str, mapping: dict[Any, Any], why: str) -> Convert:
    def convert(value: Any) -> dict[str, Any]:
        if value not in mapping:
            raise Refused(f"{why}; use one of {sorted(map(str, mapping))}")
        return {key: mapping[value]}

    return convert


def _targets(value: Any) -> dict[str, Any]:
    mods = [str(m) for m in value] if isinstance(value, list) else [str(value)]
    if sorted(mods) == sorted(["to_k", "to_q", "to_v", "to_out.0"]):
        return {"lora.targets": "all_attention"}
    # The project matches patterns as PEFT does (equal, or a "." + pattern suffix), so the list carries over.
    return {"lora.targets": "custom", "lora.custom_targets": ", ".join(mods)}


def _keep_last(value: Any) -> dict[str, Any]:
    return {"checkpoints.keep_last": 0 if value == -1 else value}


def _interval(key: str) -> Convert:
    # ltx-trainer's null interval means "only at the end" (checkpoints) or "never" (validation).
    return lambda value: {key: value if value is not None else (None if key == "checkpoints.every" else 0)}


def _prompts(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = [value]
    prompts = [str(s["prompt"]) if isinstance(s, dict) else str(s) for s in value or []]
    if any(isinstance(s, dict) and s.get("conditions") for s in value or []):
        raise Refused("validation samples with conditions (first frame, reference, ...) have no equivalent: "
                      "the Train node's previews are text-to-video; remove the conditions")
    if not prompts:
        return {}
    return {"preview.prompts": "\n".join(prompts), "preview.count": min(len(prompts), 8)}


def _video_dims(value: Any) -> dict[str, Any]:
    width, height, frames = value
    return {"preview.width": width, "preview.height": height, "preview.frames": frames}


def _strategy_name(value: Any) -> dict[str, Any]:
    if value in ("text_to_video", "flexible"):
        return {}
    if value == "video_to_video":  # the deprecated IC-LoRA strategy: a reference clip for every batch
        return {"recipe.reference_p": 1.0}
    raise Refused("keyframe strategies are not built; text_to_video, video_to_video and flexible are")


def _is_generated(stream: str) -> Convert:
    return lambda value: {f"recipe.{stream}": "generate" if value else "condition"}


def _video_conditions(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cond in value or []:
        kind = cond.get("type", cond.get("name")) if isinstance(cond, dict) else cond
        if kind == "first_frame":
            out["recipe.first_frame_p"] = cond.get("probability", 1.0)
        elif kind == "reference":  # ltx-trainer prepends the reference latents to every batch
            out["recipe.reference_p"] = 1.0
        else:
            raise Refused(f"condition {kind!r} has no equivalent (first_frame and reference are built)")
    return out


def _no_conditions(value: Any) -> dict[str, Any]:
    if value:
        raise Refused("audio conditions (prefix, mask, reference...) have no equivalent; remove them")
    return {}


def _mixed_precision(value: Any) -> dict[str, Any]:
    if value in ("no", None):
        return {"memory.mixed_precision": "no"}
    if value == "bf16":
        return {"memory.mixed_precision": "bf16"}
    raise Refused("only bf16 or no (float32) are built; use bf16")


_NO_TEXT_ENCODER = ("captions are encoded by the cache step, not by train: give the Gemma file to "
                    "`cache --text-encoder PATH` (or cache in ComfyUI, or `cache import-ltx-trainer`)")
_NO_QUANTO = "quanto quantization is not used: load an fp8 checkpoint in ComfyUI instead"
_PREVIEWS = "previews are rendered every preview.every steps by the Train node and by `train`"

RULES: tuple[Rule, ...] = (
    # model
    Rule("model.model_path", LTX_TRAINER, "model.checkpoint", "", _to("model.checkpoint")),
    Rule("model.checkpoint_path", TUTORIAL, "model.checkpoint", "", _to("model.checkpoint")),
    Rule("model.text_encoder_path", BOTH, "", _NO_TEXT_ENCODER, _drop),
    Rule("model.training_mode", LTX_TRAINER, "", "LoRA only; full fine-tuning is not built",
         _only(("lora",), "full fine-tuning is not built; this trainer trains LoRAs only")),
    Rule("model.load_checkpoint", LTX_TRAINER, "", "`train --resume FILE` (resumes this trainer's checkpoints only)",
         _only((None,), "use `train --resume FILE` with a checkpoint written by this trainer")),
    Rule("model.video_vae_path", LTX_TRAINER, "", "LTX-2.5 split packs are not supported",
         _only((None,), "LTX-2.5 split packs are not supported yet; use an LTX-2.3 single-file checkpoint")),
    Rule("model.audio_vae_path", LTX_TRAINER, "", "LTX-2.5 split packs are not supported",
         _only((None,), "LTX-2.5 split packs are not supported yet; use an LTX-2.3 single-file checkpoint")),
    # lora
    Rule("lora.rank", BOTH, "lora.rank", "", _to("lora.rank")),
    Rule("lora.alpha", BOTH, "lora.alpha", "", _to("lora.alpha")),
    Rule("lora.dropout", LTX_TRAINER, "lora.dropout", "", _to("lora.dropout")),
    Rule("lora.target_modules", LTX_TRAINER, "lora.targets, lora.custom_targets",
         "[to_k, to_q, to_v, to_out.0] = all_attention, else custom with the same patterns", _targets),
    # training strategy
    Rule("training_strategy.name", LTX_TRAINER, "recipe.reference_p",
         "video_to_video = reference_p 1.0 (IC-LoRA); no keyframe strategies", _strategy_name),
    Rule("training_strategy.first_frame_conditioning_p", LTX_TRAINER, "recipe.first_frame_p", "",
         _to("recipe.first_frame_p")),
    Rule("training_strategy.with_audio", LTX_TRAINER, "recipe.audio", "true = generate, false = off",
         _to("recipe.audio", lambda v: "generate" if v else "off")),
    Rule("training_strategy.reference_latents_dir", LTX_TRAINER, "",
         "the cache keeps reference latents in its own folder", _drop),
    Rule("training_strategy.audio_latents_dir", LTX_TRAINER, "", "the cache keeps audio latents in its own folder",
         _drop),
    Rule("training_strategy.video.is_generated", LTX_TRAINER, "recipe.video", "true = generate, false = condition",
         _is_generated("video")),
    Rule("training_strategy.audio.is_generated", LTX_TRAINER, "recipe.audio", "true = generate, false = condition",
         _is_generated("audio")),
    Rule("training_strategy.video.latents_dir", LTX_TRAINER, "", "the cache keeps latents in its own folders", _drop),
    Rule("training_strategy.audio.latents_dir", LTX_TRAINER, "", "the cache keeps latents in its own folders", _drop),
    Rule("training_strategy.video.conditions", LTX_TRAINER, "recipe.first_frame_p, recipe.reference_p",
         "first_frame: its probability; reference: 1.0; prefix, suffix, mask, spatial_crop are refused",
         _video_conditions),
    Rule("training_strategy.audio.conditions", LTX_TRAINER, "", "audio conditions are not built", _no_conditions),
    # optimization
    Rule("optimization.steps", LTX_TRAINER, "optimization.steps", "", _to("optimization.steps")),
    Rule("*.max_train_steps", TUTORIAL, "optimization.steps", "", _to("optimization.steps")),
    Rule("optimization.learning_rate", BOTH, "optimization.learning_rate", "", _to("optimization.learning_rate")),
    Rule("optimization.batch_size", BOTH, "optimization.batch_size", "", _to("optimization.batch_size")),
    Rule("optimization.max_grad_norm", LTX_TRAINER, "optimization.max_grad_norm", "",
         _to("optimization.max_grad_norm")),
    Rule("optimization.gradient_accumulation_steps", LTX_TRAINER, "optimization.gradient_accumulation", "",
         _to("optimization.gradient_accumulation")),
    Rule("optimization.optimizer_type", LTX_TRAINER, "optimization.optimizer", "",
         _choice("optimization.optimizer", {"adamw": "adamw", "adamw8bit": "adamw8bit"}, "not built")),
    Rule("optimization.scheduler_type", LTX_TRAINER, "optimization.scheduler",
         "no cosine_with_restarts, polynomial, step",
         _choice("optimization.scheduler", {s: s for s in ("constant", "linear", "cosine")}, "schedule not built")),
    Rule("optimization.scheduler_params", LTX_TRAINER, "", "the schedules take no parameters here",
         _only(({}, None), "scheduler parameters have no equivalent; remove them")),
    Rule("optimization.enable_gradient_checkpointing", LTX_TRAINER, "memory.gradient_checkpointing", "",
         _to("memory.gradient_checkpointing")),
    Rule("*.gradient_checkpointing", TUTORIAL, "memory.gradient_checkpointing", "",
         _to("memory.gradient_checkpointing")),
    # acceleration
    Rule("acceleration.mixed_precision_mode", LTX_TRAINER, "memory.mixed_precision", "no fp16", _mixed_precision),
    Rule("*.mixed_precision", TUTORIAL, "memory.mixed_precision", "no fp16", _mixed_precision),
    Rule("acceleration.quantization", LTX_TRAINER, "", _NO_QUANTO, _drop),
    Rule("acceleration.load_text_encoder_in_8bit", LTX_TRAINER, "", _NO_TEXT_ENCODER, _drop),
    Rule("acceleration.offload_optimizer_during_validation", LTX_TRAINER, "", _PREVIEWS, _drop),
    # data
    Rule("data.preprocessed_data_root", LTX_TRAINER, "data",
         "an ltx-trainer .precomputed folder is imported into a cache in the run's folder", _to("data", str)),
    Rule("data.num_dataloader_workers", LTX_TRAINER, "", "the cache is read in the training process", _drop),
    Rule("dataset.resolution_buckets", TUTORIAL, "", "the cache step's `--buckets \"WxHxF;...\"`", _drop),
    Rule("dataset.*", TUTORIAL, "",
         "raw clips are cached first: `cache DATASET --buckets ...`, then set data: to that folder", _drop),
    Rule("*.caption_dropout_p", TUTORIAL, "recipe.caption_dropout", "", _to("recipe.caption_dropout")),
    # validation
    Rule("validation.interval", LTX_TRAINER, "preview.every", _PREVIEWS, _interval("preview.every")),
    Rule("*.validation_steps", TUTORIAL, "preview.every", _PREVIEWS, _interval("preview.every")),
    Rule("validation.samples", LTX_TRAINER, "preview.prompts, preview.count", "their prompts, one per line",
         _prompts),
    Rule("validation.prompts", LTX_TRAINER, "preview.prompts, preview.count", "one per line", _prompts),
    Rule("*.validation_prompts", TUTORIAL, "preview.prompts, preview.count", "one per line", _prompts),
    Rule("validation.video_dims", LTX_TRAINER, "preview.width, preview.height, preview.frames", "", _video_dims),
    Rule("validation.inference_steps", LTX_TRAINER, "preview.steps", "", _to("preview.steps")),
    Rule("validation.seed", LTX_TRAINER, "preview.seed", "", _to("preview.seed")),
    Rule("validation.guidance_scale", LTX_TRAINER, "preview.cfg", "", _to("preview.cfg")),
    Rule("validation.video_cfg_scale", LTX_TRAINER, "preview.cfg", "", _to("preview.cfg")),
    Rule("validation.*", LTX_TRAINER, "",
         "previews have only size, steps, seed, cfg and prompts: no STG, audio CFG, negative prompt, frame rate, "
         "image or reference conditions", _drop),
    # checkpoints
    Rule("checkpoints.interval", LTX_TRAINER, "checkpoints.every", "null = only at the end",
         _interval("checkpoints.every")),
    Rule("*.checkpointing_steps", TUTORIAL, "checkpoints.every", "", _to("checkpoints.every")),
    Rule("checkpoints.keep_last_n", LTX_TRAINER, "checkpoints.keep_last", "-1 (all) = 0", _keep_last),
    Rule("checkpoints.precision", LTX_TRAINER, "", "LoRA weights are saved in the training dtype", _drop),
    Rule("checkpoints.no_resume", LTX_TRAINER, "", "resuming happens only with `train --resume`", _drop),
    Rule("checkpoints.save_training_state", LTX_TRAINER, "",
         "every checkpoint keeps its full optimizer and RNG state", _drop),
    # flow matching
    Rule("flow_matching.timestep_sampling_mode", LTX_TRAINER, "recipe.timestep_sampling", "",
         _to("recipe.timestep_sampling")),
    Rule("flow_matching.timestep_sampling_params", LTX_TRAINER, "", "the sampler's parameters are fixed",
         _only(({}, None), "timestep sampling parameters have no equivalent; remove them")),
    # top level and services
    Rule("seed", BOTH, "seed", "", _to("seed")),
    Rule("output_dir", LTX_TRAINER, "output_dir", "", _to("output_dir")),
    Rule("output.output_dir", TUTORIAL, "output_dir", "", _to("output_dir")),
    Rule("hub.*", LTX_TRAINER, "", "no upload to the Hugging Face Hub; upload the LoRA file yourself", _drop),
    Rule("wandb.*", LTX_TRAINER, "", "no Weights & Biases logging; the run writes loss.png and its loss history",
         _drop),
)

# ltx-trainer's defaults where they differ from this trainer's, for keys a foreign config leaves out. Its default
# strategy is the deprecated text_to_video (first frame p=0.1, no audio); a flexible strategy has neither.
FOREIGN_DEFAULTS: dict[str, Any] = {
    "optimization.learning_rate": 5e-4,
    "optimization.steps": 3000,
    "optimization.batch_size": 2,
    "lora.rank": 64,
    "lora.alpha": 64,
    "memory.gradient_checkpointing": False,
    "checkpoints.keep_last": 1,
    "output_dir": "outputs",
    "recipe.audio": "off",
}
_TEXT_TO_VIDEO_DEFAULTS = {"recipe.first_frame_p": 0.1}


@dataclass
class Translation:
    """What a config file became: the settings and, for a foreign file, one line per key naming its mapping."""

    config: TrainConfig
    dialect: str | None  # None for a native config
    lines: list[str] = field(default_factory=list)

    def report(self, source: str) -> str:
        """The mapping for people: what each foreign key became, and the defaults filled in."""
        if self.dialect is None:
            return f"{source}: a config of this trainer (nothing to translate)"
        return f"{source}: read with the {self.dialect} key mapping:\n" + "\n".join(f"  {line}" for line in self.lines)


def _native_paths(cls: type = TrainConfig, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, f in cls.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, Section):  # a nested section
            yield from _native_paths(ann, (*prefix, name))
        else:
            yield (*prefix, name)


# recipe.train_audio: the deprecated alias RecipeSettings still reads.
NATIVE_KEYS = frozenset(".".join(p) for p in _native_paths()) | {"recipe.train_audio"}


def _rule(path: tuple[str, ...]) -> Rule | None:
    exact = next((r for r in RULES if r.matches(path)), None)
    if exact is not None:
        return exact
    return next((r for r in RULES if r.source.endswith(".*") and ".".join(path[:-1]) == r.source[:-2]), None)


def _walk(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Rule | None]]:
    """(path, value, rule) per key: a rule consumes its whole value, a section without one is walked into."""
    for key, value in data.items():
        path = (*prefix, str(key))
        rule = _rule(path)
        if rule is not None and not (rule.source.endswith(".*") and isinstance(value, dict)):
            yield path, value, rule
        elif isinstance(value, dict):  # no native leaf takes a mapping: a section, native or foreign
            yield from _walk(value, path)
        else:
            yield path, value, None


def _dialect(rules: list[Rule]) -> str:
    origins = {r.origin for r in rules} - {BOTH}
    return " and ".join(sorted(origins)) if origins else LTX_TRAINER


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *sections, leaf = key.split(".")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[leaf] = value
    return out


def translate(data: dict[str, Any] | None, where: str = "") -> Translation:
    """Validate ``data`` as a native config or, when it uses foreign keys, translate it (see the module docstring).

    ``ConfigError`` lists every key that is refused or unknown, and the whole mapping, in one message.
    """
    data = data or {}
    walked = list(_walk(data))
    foreign = [rule for path, _, rule in walked if rule is not None and ".".join(path) not in NATIVE_KEYS]
    if not foreign:
        return Translation(parse_section(TrainConfig, data, where=where), None)
    flat: dict[str, Any] = {}
    set_by: dict[str, str] = {}
    lines, problems = [], []
    for path, value, rule in walked:
        key = ".".join(path)
        if rule is None:
            if key not in NATIVE_KEYS:
                problems.append(f"{key}: not a setting of ltx-trainer v1.x, the LTX-2 LoRA tutorial or this trainer")
                continue
            converted = {key: value}
            lines.append(f"{key}: kept")
        else:
            try:
                converted = rule.convert(value)
            except (Refused, TypeError, ValueError, AttributeError) as err:
                problems.append(f"{key} = {value!r}: refused, {err}")
                continue
            if rule.target:
                shown = ", ".join(f"{k} = {v!r}" for k, v in converted.items()) or "nothing"
                lines.append(f"{key} -> {shown}" + (f" ({rule.note})" if rule.note else ""))
            else:
                lines.append(f"{key}: no equivalent ({rule.note})")
        for target, v in converted.items():
            if target in set_by:
                problems.append(f"{key} and {set_by[target]} both set {target}; keep one")
            set_by[target] = key
            flat[target] = v
    strategy = (data.get("training_strategy") or {}).get("name", "text_to_video")
    defaults = {**FOREIGN_DEFAULTS, **(_TEXT_TO_VIDEO_DEFAULTS if strategy == "text_to_video" else {})}
    for key, value in defaults.items():
        if key not in flat:
            flat[key] = value
            lines.append(f"{key} = {value!r} (ltx-trainer's default for an omitted key)")
    if flat.get("checkpoints.every") is None:
        flat["checkpoints.every"] = flat["optimization.steps"]
        lines.append(f"checkpoints.every = {flat['checkpoints.every']} (no interval: only the final checkpoint)")
    dialect = _dialect(foreign)
    if problems:
        raise ConfigError(
            f"{where}read with the {dialect} key mapping, these keys cannot be used:\n  " + "\n  ".join(problems)
            + "\nThe rest maps as follows:\n  " + "\n  ".join(lines)
        )
    return Translation(parse_section(TrainConfig, _nest(flat), where=where), dialect, lines)


def load_train_config(path: str | Path) -> Translation:
    """A training config file, native or foreign (translated), validated; errors name the file."""
    return translate(read_mapping(path), where=f"{Path(path).name}: ")


def mapping_table() -> str:
    """The README's mapping table (Markdown), generated from ``RULES``."""
    rows = ["| source | key | this trainer | note |", "|---|---|---|---|"]
    for r in RULES:
        target = ", ".join(f"`{t.strip()}`" for t in r.target.split(",")) if r.target else "no equivalent"
        rows.append(f"| {r.origin} | `{r.source}` | {target} | {r.note.replace('|', '/')} |")
    return "\n".join(rows)
