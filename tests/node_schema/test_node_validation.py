"""Node ``validate_inputs``: every node turns any of the pack's user errors into ComfyUI's refusal message, in one
place (``nodes/_validate.py``), while a bug keeps its traceback."""

from __future__ import annotations

import importlib
import sys

import pytest

# (module, class): user errors of several kinds, as the pack loaded by ComfyUI defines them
USER_ERRORS = [
    ("config.base", "ConfigError"),
    ("sweep.plan", "SweepError"),
    ("lorafile.read", "LoraFileError"),
    ("engine.trainer", "NonFiniteLossError"),
]


@pytest.mark.parametrize(("module", "name"), USER_ERRORS)
def test_any_user_error_becomes_the_validation_message(comfy, module, name):
    validation_result = sys.modules[f"{comfy.__name__}.nodes._validate"].validation_result
    error = getattr(importlib.import_module(f"{comfy.__name__}.trainer_core.{module}"), name)

    def check():
        raise error("lora.rank is -3: set it to 1 or more")

    assert validation_result(check) == "lora.rank is -3: set it to 1 or more"
    assert validation_result(lambda: None) is True


def test_a_bug_is_not_turned_into_a_message(comfy):
    validation_result = sys.modules[f"{comfy.__name__}.nodes._validate"].validation_result

    def check():
        raise KeyError("a bug, not the user's mistake")

    with pytest.raises(KeyError):
        validation_result(check)


def test_cache_node_refuses_a_bad_widget_value_with_its_message(comfy):
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraCacheLatents"]
    assert node.validate_inputs(folder="my_cache", tiled_vae=False) is True
    message = node.validate_inputs(folder="my_cache", tiled_vae="sometimes")
    assert isinstance(message, str) and "tiled_vae" in message


def test_dataset_node_refuses_an_empty_path(comfy):
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraLoadDataset"]
    assert node.validate_inputs(path="  ").startswith("dataset path is empty")
