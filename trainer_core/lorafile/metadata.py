"""Names used in our LoRA files: safetensors metadata keys and the ComfyUI tensor-key layout.

Every LoRA file this pack writes uses ComfyUI's layout (``diffusion_model.<module>.lora_A.weight`` [rank, in],
``.lora_B.weight`` [out, rank], ``.alpha`` a 0-d float32 tensor) and carries the metadata below. Safetensors
metadata values must be strings; lists and configs are stored as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .. import __version__

FORMAT = "ltxlora.format"
BASE_MODEL = "ltxlora.base_model"
RANK = "ltxlora.rank"
ALPHA = "ltxlora.alpha"
TARGETS = "ltxlora.targets"
STEP = "ltxlora.step"
TRIGGER = "ltxlora.trigger"
DATASET_FINGERPRINT = "ltxlora.dataset_fingerprint"
TRAINING_CONFIG = "ltxlora.training_config"
PACK_VERSION = "ltxlora.pack_version"
# Written by a conversion (``layouts.convert_file``): the source file's sha256 and the settings, as JSON, so the same
# conversion asked for again finds its file already written.
CONVERTED_FROM = "ltxlora.converted_from"
# The resolved stream modes the LoRA was trained with: audio generate | condition | off, video generate | condition.
AUDIO = "ltxlora.audio"
VIDEO = "ltxlora.video"
# IC-LoRA keys, bare (no prefix) as ltx-trainer writes them: ComfyUI's Get IC-LoRA Parameters reads any key ending in
# reference_downscale_factor, ltx-pipelines reads these names (default 1). The temporal factor is written only when it
# is not 1, as ltx-trainer does (ltx-pipelines reads it; ComfyUI v0.33's nodes do not).
REFERENCE_DOWNSCALE_FACTOR = "reference_downscale_factor"
REFERENCE_SPATIAL_SCALE_FACTOR = "reference_spatial_scale_factor"
REFERENCE_TEMPORAL_SCALE_FACTOR = "reference_temporal_scale_factor"
REFERENCE_KEYS = (REFERENCE_DOWNSCALE_FACTOR, REFERENCE_SPATIAL_SCALE_FACTOR, REFERENCE_TEMPORAL_SCALE_FACTOR)

FORMAT_COMFYUI = "comfyui"
FORMAT_PEFT = "peft"

# Family ids, as written to BASE_MODEL and reported by inspection.
FAMILY_LTX2 = "ltx-2"
FAMILY_LTX23 = "ltx-2.3"
FAMILY_LTX25 = "ltx-2.5"
FAMILY_LTXV09 = "ltxv-0.9"
FAMILIES = (FAMILY_LTX2, FAMILY_LTX23, FAMILY_LTX25, FAMILY_LTXV09)

COMFY_PREFIX = "diffusion_model."
LORA_A = "lora_A.weight"
LORA_B = "lora_B.weight"
ALPHA_SUFFIX = "alpha"


def comfy_keys(module: str) -> tuple[str, str, str]:
    """The (lora_A, lora_B, alpha) tensor keys of ``module`` (e.g. ``transformer_blocks.0.attn1.to_q``)."""
    base = f"{COMFY_PREFIX}{module}."
    return base + LORA_A, base + LORA_B, base + ALPHA_SUFFIX


def lora_metadata(
    *,
    rank: int,
    alpha: float,
    targets: Iterable[str],
    step: int,
    base_model: str = FAMILY_LTX23,
    trigger: str = "",
    dataset_fingerprint: str = "",
    training_config: Mapping[str, Any] | None = None,
    pack_version: str = __version__,
    audio: str | None = None,
    video: str | None = None,
    reference_downscale_factor: int | None = None,
    reference_temporal_scale_factor: int = 1,
) -> dict[str, str]:
    """The safetensors metadata of a LoRA file written by this pack (every value a string).

    ``audio``/``video`` are the run's resolved stream modes; left out when not given (files converted from others).
    ``reference_downscale_factor`` (IC-LoRAs only, 1 included) adds the bare reference keys, and
    ``reference_temporal_scale_factor`` its key when it is not 1.
    """
    if base_model not in FAMILIES:
        raise ValueError(f"base_model {base_model!r} is not one of {', '.join(FAMILIES)}")
    modes = {key: value for key, value in ((AUDIO, audio), (VIDEO, video)) if value is not None}
    return {
        FORMAT: FORMAT_COMFYUI,
        BASE_MODEL: base_model,
        RANK: str(int(rank)),
        ALPHA: repr(float(alpha)),
        TARGETS: json.dumps(list(targets)),
        STEP: str(int(step)),
        TRIGGER: trigger,
        DATASET_FINGERPRINT: dataset_fingerprint,
        TRAINING_CONFIG: json.dumps(dict(training_config or {}), sort_keys=True, default=str),
        PACK_VERSION: pack_version,
        **modes,
        **reference_metadata(reference_downscale_factor, reference_temporal_scale_factor),
    }


def reference_metadata(factor: int | None, temporal: int = 1) -> dict[str, str]:
    """The bare IC-LoRA keys for a spatial ``factor`` (None: not an IC-LoRA, no keys) and a ``temporal`` one
    (written only when it is not 1, as ltx-trainer does)."""
    if factor is None:
        return {}
    if factor < 1 or temporal < 1:
        raise ValueError(f"reference factors must be >= 1, got spatial {factor}, temporal {temporal}")
    keys = {REFERENCE_DOWNSCALE_FACTOR: str(int(factor)), REFERENCE_SPATIAL_SCALE_FACTOR: str(int(factor))}
    if temporal != 1:
        keys[REFERENCE_TEMPORAL_SCALE_FACTOR] = str(int(temporal))
    return keys
