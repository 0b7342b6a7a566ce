"""LTX LoRA Sweep + LTX Sweep Grid end to end through ComfyUI v0.33's own executor on a tiny LTX-2.3 model.

The workflow is what a user builds: checkpoint loader -> sweep (2 checkpoints of a real training run x strengths
0, 0.5, 1.0 x a trigger and an off-topic prompt) -> stock KSampler -> stock VAE Decode -> grid. ComfyUI's list
execution runs the sampler once per cell. Gemma cannot run here, so two tiny test-only nodes stand in: one
turns a saved ``[1, T, 96]`` tensor into LTX-2.3 text conditioning (``unprocessed_ltxav_embeds``), one keeps
what it receives for the assertions.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import av
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.engine_support import CONCEPT_SHAPE as SHAPE
from tests.engine_support import TEXT_DIM, concept_config, concept_data, tiny_backbone
from trainer_core.engine.trainer import Trainer
from trainer_core.lorafile import lora_metadata, save_lora_file
from trainer_core.sweep.grid import HEADER_WIDTH, PAD

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) trains the LoRA of this test")

CAPTURED: dict[str, list] = {}


class _TensorConditioning:
    """Test-only: LTX-2.3 text-encoder output loaded from a file, as CLIPTextEncode would return it."""

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "run"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": ""})}}

    def run(self, path):
        return ([[load_file(path)["embeds"], {"unprocessed_ltxav_embeds": True, "frame_rate": 24.0}]],)


class _Capture:
    """Test-only output node: keeps the whole list it receives under ``key``."""

    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "key": ("STRING", {"default": ""})}}

    def run(self, images, key):
        CAPTURED[key[0]] = list(images)
        return {}


class _Server:
    def __init__(self) -> None:
        self.client_id = None
        self.last_node_id = None
        self.messages: list = []

    def send_sync(self, event, data, sid=None) -> None:
        self.messages.append((event, data))


def run_prompt(prompt: dict) -> tuple[bool, dict, list]:
    """Validate like the server and execute with ComfyUI's PromptExecutor; (success, ui outputs, messages)."""
    import execution

    pid = str(uuid.uuid4())
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(pid, prompt, None))
    if not valid:
        return False, {"error": error, "node_errors": node_errors}, []
    server = _Server()
    executor = execution.PromptExecutor(server, cache_type=False, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    executor.execute(prompt, pid, {}, outputs)
    return executor.success, (executor.history_result or {}).get("outputs", {}), server.messages


def train_concept(tmp: Path, ckpt: Path, trigger: torch.Tensor, off_topic_mean: torch.Tensor) -> Path:
    """A LoRA trained on trigger -> pattern (with prior preservation), as in test_engine_learning.

    Writes the untrained adapters (B = 0) as step 0 and the trained ones as step 80 into one run folder.
    """
    backbone = tiny_backbone(ckpt)
    g = torch.Generator().manual_seed(0)
    pattern = torch.randn(SHAPE, generator=g)
    cfg = concept_config(tmp)
    trainer = Trainer(backbone, concept_data(backbone, g, pattern, trigger, off_topic_mean), cfg)
    meta = lora_metadata(**{k: v for k, v in trainer.writer.metadata.items()}, step=0)
    save_lora_file(Path(cfg.output_dir) / "t_step_00000.safetensors", trainer.adapters.to_comfy_state_dict(), meta)
    trainer.train()
    return Path(cfg.output_dir)


def _prompt(ckpt_name: str, run_dir: Path, trigger_file: Path, off_file: Path) -> dict:
    def sampler(model, seed, positive):
        return {"class_type": "KSampler", "inputs": {
            "model": model, "seed": seed, "steps": 4, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": positive, "negative": ["3", 0], "latent_image": ["5", 0], "denoise": 1.0}}

    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "TestTensorConditioning", "inputs": {"path": str(trigger_file)}},
        "3": {"class_type": "TestTensorConditioning", "inputs": {"path": str(off_file)}},
        "4": {"class_type": "LtxLoraSweep", "inputs": {
            "model": ["1", 0], "loras": str(run_dir), "strengths": "0, 0.5, 1.0", "seeds": "7", "max_cells": 48,
            "with_trigger": ["2", 0], "without_trigger": ["3", 0]}},
        "5": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 64, "height": 64, "length": 9,
                                                               "batch_size": 1}},
        "6": sampler(["4", 0], ["4", 2], ["4", 1]),
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "LtxLoraSweepGrid", "inputs": {
            "images": ["7", 0], "labels": ["4", 3], "sweep": ["4", 4], "columns": 0, "fps": 8.0,
            "tile_height": 64, "filename_prefix": "sweep_test/grid"}},
        "9": {"class_type": "TestCapture", "inputs": {"images": ["7", 0], "key": "cells"}},
        # The base model sampled directly, without the sweep: strength 0 must reproduce it exactly.
        "10": sampler(["1", 0], 7, ["2", 0]),
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "TestCapture", "inputs": {"images": ["11", 0], "key": "base"}},
        "13": {"class_type": "TestCapture", "inputs": {"images": ["8", 0], "key": "grid"}},
    }


@pytest.fixture(scope="module")
def sweep_run(comfy, tmp_path_factory):
    import folder_paths

    import nodes

    nodes.NODE_CLASS_MAPPINGS.setdefault("TestTensorConditioning", _TensorConditioning)
    nodes.NODE_CLASS_MAPPINGS.setdefault("TestCapture", _Capture)
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "ckpts").mkdir()
    ckpt = tmp / "ckpts" / "tiny_sweep.safetensors"
    g = torch.Generator().manual_seed(0)
    mean = 3 * torch.randn(TEXT_DIM, generator=g)
    trigger = torch.randn(1, 1024, TEXT_DIM, generator=g) + mean
    off_topic = torch.randn(1, 1024, TEXT_DIM, generator=g) - mean
    run_dir = train_concept(tmp, ckpt, trigger, -mean)
    files = {}
    for name, t in (("trigger", trigger), ("off", off_topic)):
        files[name] = tmp / f"{name}.safetensors"
        save_file({"embeds": t.contiguous()}, str(files[name]))
    folder_paths.add_model_folder_path("checkpoints", str(tmp / "ckpts"))
    previous_out = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp / "out"))
    loras = folder_paths.folder_names_and_paths["loras"]
    folder_paths.folder_names_and_paths["loras"] = ([*loras[0], str(run_dir)], loras[1])  # the node reads only there
    CAPTURED.clear()
    try:
        prompt = _prompt(ckpt.name, run_dir, files["trigger"], files["off"])
        ok, ui, messages = run_prompt(prompt)
    finally:
        folder_paths.set_output_directory(previous_out)
    errors = [m for m in messages if m[0] == "execution_error"]
    assert ok, errors or ui
    if os.environ.get("SWEEP_TEST_DUMP"):  # for looking at the grid while developing
        from PIL import Image

        Image.fromarray((CAPTURED["grid"][0][0].numpy() * 255).astype("uint8")).save(os.environ["SWEEP_TEST_DUMP"])
    yield {"prompt": prompt, "ui": ui, "out": tmp / "out", "cells": CAPTURED["cells"], "base": CAPTURED["base"][0],
           "grid": CAPTURED["grid"][0]}
    folder_paths.folder_names_and_paths["loras"] = loras


def test_sweep_runs_every_cell_through_the_stock_sampler_and_saves_the_grid(sweep_run):
    cells = sweep_run["cells"]
    # base row once + 2 checkpoints x 2 non-zero strengths, each x 2 prompts x 1 seed
    assert len(cells) == 10
    assert all(c.shape == (9, 64, 64, 3) for c in cells)
    grid_ui = sweep_run["ui"]["8"]
    videos = list((sweep_run["out"] / "sweep_test").glob("grid_*.mp4"))
    assert len(videos) == 1 and grid_ui["images"][0]["filename"] == videos[0].name
    with av.open(str(videos[0])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 9
    cell = 64 + 2 * PAD
    assert frames[0].shape[1] == HEADER_WIDTH + 2 * cell and frames[0].shape[0] > 5 * cell  # 5 rows, 2 columns
    grid = sweep_run["grid"]  # the still grid: first, middle and last frame per cell
    assert grid.shape[0] == 1 and grid.shape[2] == HEADER_WIDTH + 2 * (3 * 64 + 2 * PAD + 2 * PAD)
    table = grid_ui["text"][0]
    assert "t_step_00080.safetensors" in table and "t_step_00000.safetensors" in table
    assert "t_step_00080 @ 0.5" in table and "t_step_00000 @ 1" in table


def test_strength_zero_is_exactly_the_base_model(sweep_run):
    cells, base = sweep_run["cells"], sweep_run["base"]
    assert torch.equal(cells[0], base)  # base row, trigger prompt, seed 7
    # A LoRA row differs from it: the sweep did apply something.
    assert not torch.equal(cells[8], base)  # trained checkpoint at 1.0, trigger prompt


def test_numbers_rank_the_trained_lora_above_the_untrained_one(sweep_run):
    table = sweep_run["ui"]["8"]["text"][0]
    ranking = table.split("ranking")[1].splitlines()[1:]
    assert ranking[0].startswith("1. t_step_00080.safetensors"), table
    assert ranking[1].startswith("2. t_step_00000.safetensors"), table
    trained_score = float(ranking[0].split()[-1])
    untrained_score = float(ranking[1].split()[-1])
    assert trained_score > untrained_score + 0.005, table
    assert abs(untrained_score) < 1e-3, table  # B = 0: the untrained LoRA changes nothing


def test_too_many_cells_are_refused_before_anything_runs(sweep_run):
    import execution

    prompt = {k: dict(v, inputs=dict(v["inputs"])) for k, v in sweep_run["prompt"].items()}
    prompt["4"]["inputs"]["max_cells"] = 8
    _, _, outputs, node_errors = asyncio.run(execution.validate_prompt("limit", prompt, None))
    # ComfyUI's validation (before any node runs) drops every output downstream of the sweep.
    assert not {"8", "9", "13"} & set(outputs) and outputs == ["12"]
    assert "this sweep has 10 cells, more than max_cells = 8" in str(node_errors["4"])


def test_sweep_of_an_audio_lora_plays_each_cell_with_its_sound(comfy, tmp_path, monkeypatch):
    """The audio validation graph of stock nodes (Load LTXV Audio VAE, LTXV Empty Latent Audio, Concat / Separate
    AV Latent, LTXV Audio VAE Decode) on a tiny LTX-2.3 with an audio VAE: the grid video has one audio track
    playing the cells in turn, and every cell has its own mp4 with sound."""
    import folder_paths

    import nodes
    from tests.lorafile.test_lorafile_models import ALL_BLOCK_LINEARS, fabricate
    from trainer_core.lorafile.layouts import to_layout
    from trainer_core.ltxcore.tiny import write_tiny_checkpoint

    nodes.NODE_CLASS_MAPPINGS.setdefault("TestTensorConditioning", _TensorConditioning)
    ckpt = write_tiny_checkpoint(tmp_path / "ckpts" / "tiny_av_sweep.safetensors", audio=True, audio_vae=True)
    lora = tmp_path / "audio_lora.safetensors"
    save_lora_file(lora, to_layout(fabricate(ckpt, ALL_BLOCK_LINEARS, seed=3), "comfy"), {})
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    trigger = tmp_path / "trigger.safetensors"
    save_file({"embeds": torch.randn(1, 16, TEXT_DIM, generator=torch.Generator().manual_seed(0))}, str(trigger))
    folder_paths.add_model_folder_path("checkpoints", str(ckpt.parent))
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt.name}},
        "2": {"class_type": "LTXVAudioVAELoader", "inputs": {"ckpt_name": ckpt.name}},
        "3": {"class_type": "TestTensorConditioning", "inputs": {"path": str(trigger)}},
        "4": {"class_type": "LtxLoraSweep", "inputs": {
            "model": ["1", 0], "loras": str(lora), "strengths": "0, 1.0", "seeds": "7", "max_cells": 48,
            "with_trigger": ["3", 0]}},
        "5": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 64, "height": 64, "length": 9,
                                                               "batch_size": 1}},
        "6": {"class_type": "LTXVEmptyLatentAudio", "inputs": {"frames_number": 9, "frame_rate": 24.0,
                                                               "batch_size": 1, "audio_vae": ["2", 0]}},
        "7": {"class_type": "LTXVConcatAVLatent", "inputs": {"video_latent": ["5", 0], "audio_latent": ["6", 0]}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": ["4", 2], "steps": 3, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["4", 1], "negative": ["3", 0], "latent_image": ["7", 0],
            "denoise": 1.0}},
        "9": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": ["8", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "LTXVAudioVAEDecode", "inputs": {"samples": ["9", 1], "audio_vae": ["2", 0]}},
        "12": {"class_type": "LtxLoraSweepGrid", "inputs": {
            "images": ["10", 0], "labels": ["4", 3], "sweep": ["4", 4], "audio": ["11", 0], "columns": 0,
            "fps": 24.0, "tile_height": 64, "filename_prefix": "audio_sweep/grid"}},
    }
    previous_out = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path / "out"))
    try:
        ok, ui, messages = run_prompt(prompt)
    finally:
        folder_paths.set_output_directory(previous_out)
    assert ok, [m for m in messages if m[0] == "execution_error"] or ui
    out = tmp_path / "out" / "audio_sweep"
    (grid,) = out.glob("grid_*_.mp4")
    cells = sorted(out.glob("grid_*_cell_*.mp4"))
    assert [p.name[-11:] for p in cells] == ["cell_00.mp4", "cell_01.mp4"]  # base + the LoRA at 1.0
    waves = []
    for path, frames in ((grid, 18), *((c, 9) for c in cells)):
        with av.open(str(path)) as container:
            (sound,) = container.streams.audio
            assert sum(1 for _ in container.decode(video=0)) == frames
        with av.open(str(path)) as container:
            wave = torch.cat([torch.from_numpy(f.to_ndarray()) for f in container.decode(audio=0)], dim=1)
        assert frames / 24 <= wave.shape[1] / sound.rate <= frames / 24 + 1024 / sound.rate + 0.01, path.name
        assert wave.abs().max() > 1e-3, f"{path.name} is silent"
        waves.append(wave)
    n = round(9 / 24 * sound.rate)
    assert not torch.allclose(waves[1][:, : n - 2048], waves[2][:, : n - 2048], atol=1e-3)  # the LoRA moved the sound
