"""The strength sweep of an IC-LoRA, guided by a reference clip, through ComfyUI v0.33's own executor on a tiny
LTX-2.3: LTX LoRA Sweep -> stock Get IC-LoRA Parameters (per row) -> LTXV Add Guide (frame 0, strength 1) ->
KSampler -> LTXV Crop Guides -> VAE Decode -> LTX Sweep Grid."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.engine_support import TEXT_DIM, config, synthetic_data, tiny_backbone
from tests.sweep.test_sweep_comfy import _TensorConditioning, run_prompt
from trainer_core.engine.trainer import Trainer

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) trains the IC-LoRA of this test")

CAPTURED: dict[str, list] = {}


class _TensorImage:
    """Test-only: an IMAGE batch (the reference clip's frames) loaded from a file."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": ""})}}

    def run(self, path):
        return (load_file(path)["frames"],)


class _Capture:
    """Test-only output node: keeps every value of a list input (images and IC-LoRA parameters)."""

    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "parameters": ("IC_LORA_PARAMETERS",)}}

    def run(self, images, parameters):
        CAPTURED.update(images=list(images), parameters=list(parameters))
        return {}


def test_sweep_of_an_ic_lora_is_guided_by_the_reference_clip(comfy, tmp_path, monkeypatch):
    import folder_paths

    import nodes

    for name, cls in (("TestTensorConditioning", _TensorConditioning), ("TestTensorImage", _TensorImage),
                      ("TestIcCapture", _Capture)):
        nodes.NODE_CLASS_MAPPINGS.setdefault(name, cls)
    ckpt = tmp_path / "ckpts" / "tiny_ic_sweep.safetensors"
    ckpt.parent.mkdir()
    cfg = config(tmp_path, name="ic", recipe={"reference_p": 1.0, "audio": "off"},
                 lora={"targets": "video_attention_ffn"}, optimization={"steps": 2}, checkpoints={"every": 2})
    Trainer(tiny_backbone(ckpt), synthetic_data(n=2, audio=False, size=4, reference_factor=2), cfg).train()
    g = torch.Generator().manual_seed(0)
    files = {"trigger": tmp_path / "trigger.safetensors", "reference": tmp_path / "reference.safetensors"}
    save_file({"embeds": torch.randn(1, 8, TEXT_DIM, generator=g)}, str(files["trigger"]))
    save_file({"frames": torch.rand(9, 128, 128, 3, generator=g)}, str(files["reference"]))
    folder_paths.add_model_folder_path("checkpoints", str(ckpt.parent))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path / "run")], {".safetensors"}))
    previous_out = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path / "out"))
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt.name}},
        "2": {"class_type": "TestTensorConditioning", "inputs": {"path": str(files["trigger"])}},
        "3": {"class_type": "TestTensorImage", "inputs": {"path": str(files["reference"])}},
        "4": {"class_type": "LtxLoraSweep", "inputs": {
            "model": ["1", 0], "loras": str(tmp_path / "run" / "ic_step_00002.safetensors"), "strengths": "0, 1.0",
            "seeds": "7", "max_cells": 48, "with_trigger": ["2", 0]}},
        "5": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 128, "height": 128, "length": 9,
                                                               "batch_size": 1}},
        "6": {"class_type": "GetICLoRAParameters", "inputs": {"iclora_model": ["4", 0]}},
        "7": {"class_type": "LTXVAddGuide", "inputs": {
            "positive": ["4", 1], "negative": ["2", 0], "vae": ["1", 2], "latent": ["5", 0], "image": ["3", 0],
            "frame_idx": 0, "strength": 1.0, "iclora_parameters": ["6", 0]}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": ["4", 2], "steps": 3, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["7", 0], "negative": ["7", 1], "latent_image": ["7", 2],
            "denoise": 1.0}},
        "9": {"class_type": "LTXVCropGuides", "inputs": {"positive": ["7", 0], "negative": ["7", 1],
                                                         "latent": ["8", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 2], "vae": ["1", 2]}},
        "11": {"class_type": "LtxLoraSweepGrid", "inputs": {
            "images": ["10", 0], "labels": ["4", 3], "sweep": ["4", 4], "columns": 0, "fps": 8.0,
            "tile_height": 64, "filename_prefix": "ic_sweep/grid"}},
        "12": {"class_type": "TestIcCapture", "inputs": {"images": ["10", 0], "parameters": ["6", 0]}},
    }
    CAPTURED.clear()
    try:
        ok, ui, messages = run_prompt(prompt)
    finally:
        folder_paths.set_output_directory(previous_out)
    assert ok, [m for m in messages if m[0] == "execution_error"] or ui
    # The base row (the MODEL without a LoRA) guides at full size; the IC-LoRA row at its file's factor.
    assert CAPTURED["parameters"] == [{"reference_downscale_factor": 1}, {"reference_downscale_factor": 2}]
    base, lora = CAPTURED["images"]
    assert base.shape == lora.shape == (9, 128, 128, 3) and not torch.equal(base, lora)
    assert len(list((tmp_path / "out" / "ic_sweep").glob("grid_*.mp4"))) == 1
    assert "ic_step_00002 @ 1" in ui["11"]["text"][0]
