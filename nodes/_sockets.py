"""The pack's own socket types, each defined once: what its nodes pass to each other besides ComfyUI's types.

ComfyUI links an output to an input when their type names are equal, and saved workflows store those names, so
every node that outputs or takes one of these uses the object defined here.
"""

from __future__ import annotations

from comfy_api.latest import io

TRAINING_DATASET = io.Custom("LTX_TRAINING_DATASET")  # trainer_core.dataset.PreparedDataset
TRAINING_DATA = io.Custom("LTX_TRAINING_DATA")  # trainer_core.cache.CachedData (the engine's TrainingData)
SWEEP = io.Custom("LTX_SWEEP")  # trainer_core.sweep.plan.SweepPlan
# One per settings node, each carrying its config section (trainer_core.config.training).
LORA_SETTINGS = io.Custom("LTX_LORA_SETTINGS")
OPTIMIZER_SETTINGS = io.Custom("LTX_OPTIMIZER_SETTINGS")
RECIPE_SETTINGS = io.Custom("LTX_RECIPE_SETTINGS")
MEMORY_SETTINGS = io.Custom("LTX_MEMORY_SETTINGS")
PREVIEW_SETTINGS = io.Custom("LTX_PREVIEW_SETTINGS")

ALL = (
    TRAINING_DATASET,
    TRAINING_DATA,
    SWEEP,
    LORA_SETTINGS,
    OPTIMIZER_SETTINGS,
    RECIPE_SETTINGS,
    MEMORY_SETTINGS,
    PREVIEW_SETTINGS,
)
