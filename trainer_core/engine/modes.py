"""Which streams a run generates and which it only conditions on, and which LoRA layers that leaves trainable.

``recipe.audio`` (auto | generate | condition | off) and ``recipe.video`` (generate | condition) resolve against
the data before any weights move. A generated stream is noised with its own sigma and is in the loss; a
conditioning stream is fed clean at timestep 0 and has no loss (ltx-trainer's ``flexible`` strategy); an ``off``
stream is not fed at all. ``auto`` is generate when every clip has audio latents and off otherwise: on data where
only some clips have audio it is off, with a warning naming the count, because a batch of clips without audio
cannot train the audio stream and the reference drops such clips from an audio run silently.

Layers whose output cannot reach the loss are left out of the LoRA, so no file holds all-zero layers:

- ``audio: off``: every layer of the audio stream and both cross-modal attentions (the audio stream and the
  audio-video attentions do not run without audio tokens).
- a conditioning stream: the last block's cross-modal attention *into* that stream and its feed-forward. In the
  reference block order (ltx-core, and ComfyUI's trainable blocks here) the other stream reads the conditioning
  stream's cross-attention input before the last block writes into it, so nothing written there reaches the
  generated stream's output. Every earlier layer of the conditioning stream does (through the cross-modal
  attentions), so it trains.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..config import ConfigError
from ..config.training import RecipeSettings
from .data import TrainingData, audio_count

log = logging.getLogger(__name__)

AUDIO_STREAM_LAYERS = ("audio_attn1.", "audio_attn2.", "audio_ff.", "audio_to_video_attn.", "video_to_audio_attn.")
# Per conditioning stream: the last block's layers that write into it (after the other stream read it).
_LAST_BLOCK_INTO = {"video": ("audio_to_video_attn.", "ff."), "audio": ("video_to_audio_attn.", "audio_ff.")}
_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class StreamModes:
    """The resolved modes: what a run does with each stream."""

    audio: Literal["generate", "condition", "off"]
    video: Literal["generate", "condition"]
    # IC-LoRA: the data's reference_downscale_factor N when recipe.reference_p > 0, else 0 (no reference).
    reference_factor: int = 0
    # IC-LoRA: the data's reference_temporal_scale_factor (1 = the reference has the clip's frames).
    reference_temporal_factor: int = 1


def resolve_modes(
    recipe: RecipeSettings, data: TrainingData, model_has_audio: bool = True, *, log_result: bool = True
) -> StreamModes:
    """``recipe.audio``/``recipe.video`` for this data; ``ConfigError`` where the data or model cannot give them.

    ``log_result=False`` checks without logging (the CLI checks before loading the model; the trainer logs).
    """
    info = log.info if log_result else _quiet
    warn = log.warning if log_result else _quiet
    total, with_audio = len(data), audio_count(data)
    without = total - with_audio
    audio = recipe.audio
    if audio == "auto":
        if with_audio == total and model_has_audio:
            audio = "generate"
            info("recipe.audio auto: every clip (%d) has audio latents: training audio and video", total)
        elif with_audio == 0:
            audio = "off"
            info("recipe.audio auto: no clip has audio latents: video only (no audio layers in the LoRA)")
        elif not model_has_audio:
            audio = "off"
            info("recipe.audio auto: this model has no audio stream: video only")
        else:
            audio = "off"
            warn(
                "recipe.audio auto: %d of %d clips have no audio latents, so audio is off and the LoRA is video "
                "only. To train audio, re-cache those clips with audio (or leave them out of the dataset) and set "
                "recipe.audio: generate; set recipe.audio: off to silence this warning",
                without,
                total,
            )
    elif audio != "off" and without:
        raise ConfigError(
            f"recipe.audio is {audio!r}, but {without} of {total} clips have no audio latents: re-cache them with "
            "audio (a clip without an audio track has none; leave such clips out of the dataset), or set "
            "recipe.audio: off to train video only"
        )
    elif audio != "off" and not model_has_audio:
        raise ConfigError(f"recipe.audio is {audio!r}, but this model has no audio stream: set recipe.audio: off")
    if recipe.video == "condition" and audio != "generate":
        # Only reachable through auto (explicit combinations are refused by the schema).
        raise ConfigError(
            f"recipe.video is 'condition', and recipe.audio {recipe.audio!r} resolved to {audio!r} on this data: "
            "nothing would be generated. Video-to-audio needs audio latents in every clip (re-cache with audio) "
            "and recipe.audio: generate"
        )
    spatial, temporal = _reference_factors(recipe, data, info, warn)
    modes = StreamModes(audio=audio, video=recipe.video, reference_factor=spatial, reference_temporal_factor=temporal)
    info("streams: video %s, audio %s", modes.video, modes.audio)
    return modes


def _reference_factors(
    recipe: RecipeSettings, data: TrainingData, info: Callable, warn: Callable
) -> tuple[int, int]:
    """IC-LoRA's reference_downscale_factor (0: no IC-LoRA) and reference_temporal_scale_factor for
    ``recipe.reference_p`` on ``data``."""
    counter = getattr(data, "reference_count", None)
    with_reference, total = (int(counter()) if counter is not None else 0), len(data)
    if recipe.reference_p == 0:
        if with_reference:
            info("the data holds %d reference latents, but recipe.reference_p is 0: training without them "
                 "(set recipe.reference_p to train an IC-LoRA)", with_reference)
        return 0, 1
    if recipe.video != "generate":
        raise ConfigError(
            f"recipe.reference_p is {recipe.reference_p}, but recipe.video is {recipe.video!r}: an IC-LoRA "
            "generates video from the reference, so set recipe.video: generate (or recipe.reference_p: 0)"
        )
    if with_reference == 0:
        raise ConfigError(
            f"recipe.reference_p is {recipe.reference_p} (IC-LoRA), but none of the {total} clips has a reference "
            "latent: add a reference_video column to the dataset manifest (the control clip of each video, e.g. "
            "its depth or edge map), cache the dataset again, or set recipe.reference_p: 0"
        )
    if with_reference < total:
        warn("recipe.reference_p: %d of %d clips have no reference latent (no reference_video in the manifest); "
             "they train without one", total - with_reference, total)
    factor = int(getattr(data, "reference_downscale_factor", 1))
    temporal = int(getattr(data, "reference_temporal_scale_factor", 1) or 1)
    info("IC-LoRA: reference latents prepended (p=%g, reference_downscale_factor %d%s)", recipe.reference_p, factor,
         f", reference_temporal_scale_factor {temporal}" if temporal != 1 else "")
    return factor, temporal


def refuse_temporal_reference_in_comfyui(recipe: RecipeSettings, data: TrainingData) -> None:
    """``ConfigError`` for an IC-LoRA on references with a temporal factor, trained inside ComfyUI: v0.33's Get
    IC-LoRA Parameters reads only reference_downscale_factor and LTXV Add Guide places every guide frame at the
    clip's own frame times, so ComfyUI could neither preview nor use such a LoRA as it was trained."""
    s = int(getattr(data, "reference_temporal_scale_factor", 1) or 1)
    if recipe.reference_p > 0 and s != 1:
        raise ConfigError(
            f"the training data's references have reference_temporal_scale_factor {s} (every {s}th frame), which "
            "ComfyUI's IC-LoRA nodes (Get IC-LoRA Parameters, LTXV Add Guide) cannot place, so a LoRA trained on them "
            "would not work in ComfyUI: train it headless (python -m trainer_core train) for ltx-pipelines, or cache "
            "the references again without --reference-temporal-scale-factor"
        )


def stream_targets(targets: dict[str, nn.Module], modes: StreamModes) -> dict[str, nn.Module]:
    """``targets`` without the layers ``modes`` leaves without gradient (see the module docstring); logs what goes."""
    blocks = [int(m.group(1)) for n in targets if (m := _BLOCK.match(n))]
    last = max(blocks, default=-1)
    dropped: dict[str, list[str]] = {}
    for name in targets:
        found = _BLOCK.match(name)
        sub = found.group(2) if found else name
        if modes.audio == "off" and sub.startswith(AUDIO_STREAM_LAYERS):
            dropped.setdefault("audio is off", []).append(name)
            continue
        for stream in ("video", "audio"):
            if getattr(modes, stream) == "condition" and found and int(found.group(1)) == last:
                if sub.startswith(_LAST_BLOCK_INTO[stream]):
                    dropped.setdefault(f"the last block's layers into the {stream} conditioning", []).append(name)
    kept = {n: m for n, m in targets.items() if not any(n in names for names in dropped.values())}
    for why, names in dropped.items():
        log.info("%s: %d LoRA layers left out (they cannot reach the loss): %s", why, len(names), _short(names))
    if not kept:
        raise ConfigError(
            f"no LoRA layer is left to train with recipe.audio {modes.audio} and recipe.video {modes.video}: "
            "the targets hold only layers that cannot reach the loss; choose lora.targets that include the "
            "generated stream's layers"
        )
    return kept


def _quiet(*_args: object) -> None:
    """Stands in for a log call when a check should not log."""


def _short(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
