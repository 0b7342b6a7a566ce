"""Every bundled workflow, converted to the API format and executed headless through ComfyUI v0.33 on a tiny LTX-2.3.

What the test changes in each converted prompt, and only that:
- model files: the checkpoint name becomes the tiny LTX-2.3 checkpoint (``trainer_core.ltxcore.tiny``; for the
  audio+video workflow the one with an audio VAE and vocoder, also for Load LTXV Audio VAE); the LoRA names the
  workflows expect are written as small random LoRAs for that checkpoint.
- the Gemma text encoder cannot exist here (12B): ``LTXAVTextEncoderLoader`` is replaced by a test-only loader
  returning ComfyUI's real LTX-2.3 text-encoder classes around a tiny random Gemma (``tiny_ltx_clip``), so
  ``CLIPTextEncode`` and the cache node run their real code paths and give ``[1, T, 96]`` conditioning.
- user data and scale: the dataset path (the demo's clips with sound for the audio+video workflow), tiny buckets,
  the cache folder, 4 training steps with a checkpoint and a 64x64 preview every 2, 2 sampler steps on a 64x64x9
  latent, float32 training (CPU), rank 4, run names.
A workflow with a node type ComfyUI does not know fails here (``MissingNodeError``); nothing is skipped.
"""

from __future__ import annotations

import asyncio
import json
import types
from pathlib import Path

import pytest

from tests import workflow_support as ws

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) builds the tiny checkpoint's VAE checks")

TINY = "tiny_ltx23.safetensors"
TINY_AV = "tiny_ltx23_audio_vae.safetensors"  # with the audio VAE and vocoder
BUCKETS = "64x64x9;64x64x1"
STEPS, EVERY = 4, 2


def _overrides(env) -> dict[tuple[str, str], object]:
    return {
        ("CheckpointLoaderSimple", "ckpt_name"): TINY,
        ("LtxLoraLoadDataset", "path"): str(env.dataset),
        ("LtxLoraLoadDataset", "buckets"): BUCKETS,
        ("LtxLoraCacheLatents", "folder"): str(env.root / "cache"),
        ("LtxLoraOptimizerSettings", "steps"): STEPS,
        ("LtxLoraMemorySettings", "mixed_precision"): "no",
        ("LtxLoraTrain", "every"): EVERY,
        ("LtxLoraLoraSettings", "rank"): 4,
        ("LtxLoraPreviewSettings", "every"): EVERY,
        ("LtxLoraPreviewSettings", "width"): 64,
        ("LtxLoraPreviewSettings", "height"): 64,
        ("LtxLoraPreviewSettings", "steps"): 2,
        ("EmptyLTXVLatentVideo", "width"): 64,
        ("EmptyLTXVLatentVideo", "height"): 64,
        ("EmptyLTXVLatentVideo", "length"): 9,
        ("LTXVEmptyLatentAudio", "frames_number"): 9,
        ("KSampler", "steps"): 2,
    }


def to_test_prompt(workflow: dict, env, extra: dict | None = None) -> dict:
    """The workflow in API format with the test's substitutions (see the module docstring)."""
    prompt = ws.ui_to_api(workflow)
    table = _overrides(env) | (extra or {})
    for node in prompt.values():
        if node["class_type"] == "LTXAVTextEncoderLoader":
            node["class_type"] = "LtxLoraTestTinyTextEncoderLoader"
        for (cls, name), value in table.items():
            if node["class_type"] == cls and name in node["inputs"]:
                node["inputs"][name] = value
    return prompt


def _tiny_text_encoder_node():
    from comfy_api.latest import io

    from tests.comfy_boot import find_comfyui
    from tests.cache.test_cache_comfy import tiny_ltx_clip

    class TinyTextEncoderLoader(io.ComfyNode):
        """Test only: stands in for LTXAVTextEncoderLoader (same inputs) with a tiny Gemma."""

        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id="LtxLoraTestTinyTextEncoderLoader",
                inputs=[io.String.Input("text_encoder"), io.String.Input("ckpt_name"), io.String.Input("device")],
                outputs=[io.Clip.Output()],
            )

        @classmethod
        def execute(cls, **_) -> io.NodeOutput:
            return io.NodeOutput(tiny_ltx_clip(find_comfyui()))

    return TinyTextEncoderLoader


SWEEP_CHECKPOINTS = [f"{ws.RUN_NAME}_step_{step:05d}.safetensors" for step in (250, 500)]


def _write_loras(ckpt: Path, loras: Path) -> None:
    """LoRAs the workflows name: a run folder with two checkpoints (sweep), a file (inspect), a PEFT file (convert,
    by the name the workflow gives)."""
    from tests.lorafile.test_lorafile_models import ALL_BLOCK_LINEARS, fabricate
    from trainer_core.lorafile.layouts import to_layout
    from trainer_core.lorafile.write import save_lora_file

    names = [f"{ws.RUN_NAME}/{n}" for n in SWEEP_CHECKPOINTS] + [f"{ws.RUN_NAME}.safetensors"]
    for i, name in enumerate(names):
        save_lora_file(loras / name, to_layout(fabricate(ckpt, ALL_BLOCK_LINEARS, seed=i), "comfy"), {})
    peft = to_layout(fabricate(ckpt, ALL_BLOCK_LINEARS, seed=9), "peft")
    save_lora_file(loras / "lora_from_another_trainer.safetensors", peft, {})


@pytest.fixture(scope="module")
def env(comfy, tmp_path_factory):
    import folder_paths

    import nodes
    from tests.cache.test_cache_core import make_dataset
    from trainer_core.ltxcore.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("workflows")
    dirs = {kind: root / kind for kind in ("checkpoints", "loras", "output")}
    for d in dirs.values():
        d.mkdir()
    ckpt = write_tiny_checkpoint(dirs["checkpoints"] / TINY)
    write_tiny_checkpoint(dirs["checkpoints"] / TINY_AV, audio_vae=True)
    saved = {k: folder_paths.folder_names_and_paths[k] for k in ("checkpoints", "loras")}
    for kind in saved:
        folder_paths.folder_names_and_paths[kind] = ([str(dirs[kind])], saved[kind][1])
    folder_paths.filename_list_cache.clear()
    output = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(dirs["output"]))
    nodes.NODE_CLASS_MAPPINGS["LtxLoraTestTinyTextEncoderLoader"] = _tiny_text_encoder_node()
    _write_loras(ckpt, dirs["loras"])
    yield types.SimpleNamespace(root=root, dataset=make_dataset(root / "dataset"), **dirs)
    del nodes.NODE_CLASS_MAPPINGS["LtxLoraTestTinyTextEncoderLoader"]
    folder_paths.folder_names_and_paths.update(saved)
    folder_paths.filename_list_cache.clear()
    folder_paths.set_output_directory(output)


def run(name: str, env, extra: dict | None = None) -> ws.RunResult:
    import folder_paths

    folder_paths.filename_list_cache.clear()
    result = ws.run_prompt(to_test_prompt(ws.load_workflow(name), env, extra))
    assert result.success, f"{name} failed:\n{result.error()}"
    return result


def _outputs_of(result: ws.RunResult, workflow: dict, node_type: str) -> list[dict]:
    ids = [str(n["id"]) for n in workflow["nodes"] if n["type"] == node_type]
    return [result.outputs[i] for i in ids if i in result.outputs]


def _texts(result: ws.RunResult, workflow: dict) -> str:
    return "\n".join(str(o.get("text")) for o in _outputs_of(result, workflow, "PreviewAny"))


def test_every_file_in_workflows_is_bundled_and_up_to_date(comfy):
    """No stray or stale graph: each JSON equals what the builder makes from today's node definitions."""
    files = sorted(p.name for p in ws.WORKFLOWS.glob("*.json"))
    assert files == sorted(ws.BUNDLED)
    for name in files:
        assert ws.load_workflow(name) == json.loads(json.dumps(ws.build(name))), (
            f"workflows/{name} is stale: run `.venv/bin/python -m tests.workflow_support` and commit"
        )


def test_each_workflow_has_notes_in_groups_and_standard_loaders(comfy):
    for name in ws.BUNDLED:
        wf = ws.load_workflow(name)
        notes = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
        assert len(wf["groups"]) >= 2 and len(notes) == len(wf["groups"]), name
        for group, note in zip(wf["groups"], notes, strict=True):
            x, y, w, h = group["bounding"]
            assert x <= note["pos"][0] <= x + w and y <= note["pos"][1] <= y + h, (name, group["title"])
            assert note["widgets_values"][0].startswith("## "), (name, group["title"])
        loaders = {n["type"] for n in wf["nodes"]} & {"CheckpointLoaderSimple", "LTXAVTextEncoderLoader"}
        assert "CheckpointLoaderSimple" in loaders, name


def test_missing_node_fails_loudly(comfy):
    wf = ws.load_workflow("2_train_lora_from_cache.json")
    wf["nodes"][3]["type"] = "LtxLoraSomethingNotRegistered"
    with pytest.raises(ws.MissingNodeError, match="LtxLoraSomethingNotRegistered"):
        ws.ui_to_api(wf)


def test_converter_follows_links_widgets_and_seed_controls(comfy):
    prompt = ws.ui_to_api(ws.load_workflow("3_sweep_checkpoints_x_strengths.json"))
    (sampler,) = [n["inputs"] for n in prompt.values() if n["class_type"] == "KSampler"]
    (sweep_id,) = [k for k, n in prompt.items() if n["class_type"] == "LtxLoraSweep"]
    # the seed widget is linked to the sweep's seed list; its "fixed" control value is not taken as steps
    assert sampler["seed"] == [sweep_id, 2] and sampler["model"] == [sweep_id, 0]
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"]) == (30, 3.0, "euler")
    assert prompt[sweep_id]["inputs"]["loras"] == ws.RUN_NAME


def test_1_prepare_and_cache(env):
    wf = ws.load_workflow("1_prepare_and_cache_dataset.json")
    result = run("1_prepare_and_cache_dataset.json", env)
    manifest = json.loads((env.root / "cache" / "manifest.json").read_text())
    assert len(manifest["items"]) == 4
    assert "4 clips encoded" in _texts(result, wf)
    assert _outputs_of(result, wf, "PreviewImage")[0]["images"]  # decoded cached item
    assert _outputs_of(result, wf, "LtxLoraDatasetPreview")[0]["images"]  # contact sheet


def test_2_train_from_cache_writes_checkpoints_and_preview(env):
    wf = ws.load_workflow("2_train_lora_from_cache.json")
    result = run("2_train_lora_from_cache.json", env, {("LtxLoraTrain", "name"): "run2"})
    run_dir = env.loras / "run2"
    steps = sorted(p.name for p in run_dir.glob("run2_step_?????.safetensors"))  # not the .state files
    assert steps == [f"run2_step_{s:05d}.safetensors" for s in range(EVERY, STEPS + 1, EVERY)]
    assert (run_dir / "config.yaml").is_file()
    assert str(run_dir) in _texts(result, wf)
    assert _outputs_of(result, wf, "LtxLoraPlotLoss")[0]["images"]
    previews = sorted(p.name for p in (run_dir / "previews").glob("*.png"))  # in-training previews
    assert previews == [f"run2_step_{s:05d}.png" for s in range(EVERY, STEPS + 1, EVERY)]


def test_3_sweep_grid(env):
    wf = ws.load_workflow("3_sweep_checkpoints_x_strengths.json")
    result = run("3_sweep_checkpoints_x_strengths.json", env)
    (grid,) = _outputs_of(result, wf, "PreviewImage")
    assert len(grid["images"]) == 1
    table = _texts(result, wf)
    assert all(name.removesuffix(".safetensors") in table for name in SWEEP_CHECKPOINTS), table
    assert "bleed" in table and "effect" in table


def test_4_inspect_and_convert(env):
    wf = ws.load_workflow("4_inspect_and_convert_lora.json")
    result = run("4_inspect_and_convert_lora.json", env)
    text = _texts(result, wf)
    assert "LTX-2.3" in text and "peft" in text.lower()
    assert (env.loras / "lora_from_another_trainer_comfy.safetensors").is_file()


def test_4_queued_again_leaves_its_file_and_refuses_another_conversion_under_its_name(env):
    """Queued again unchanged (each prompt here runs without ComfyUI's cache, as after a restart), workflow 4 runs
    and leaves the file it wrote as it is. The same output name for other settings or another source is refused when
    queued, naming the file, which stays as it was."""
    import execution

    name = "4_inspect_and_convert_lora.json"
    out = env.loras / "lora_from_another_trainer_comfy.safetensors"
    run(name, env)
    written = (out.stat().st_mtime_ns, out.read_bytes())
    result = run(name, env)
    assert (out.stat().st_mtime_ns, out.read_bytes()) == written
    report = _texts(result, ws.load_workflow(name))
    assert f"{out.name} already holds lora_from_another_trainer.safetensors converted" in report
    other_source = {("LtxLoraConvert", "source"): f"{ws.RUN_NAME}.safetensors",
                    ("LtxLoraConvert", "output_name"): out.name}
    for extra in ({("LtxLoraConvert", "dtype"): "bfloat16"}, {("LtxLoraConvert", "fold_alpha"): True}, other_source):
        prompt = to_test_prompt(ws.load_workflow(name), env, extra)
        _, _, outputs, node_errors = asyncio.run(execution.validate_prompt("again", prompt, None))
        (convert,) = [i for i, node in prompt.items() if node["class_type"] == "LtxLoraConvert"]
        assert convert not in outputs  # the Inspect branch may still run; Convert is refused
        assert f"{out} already exists and is not" in json.dumps(node_errors[convert])
        ws.run_prompt(prompt)
    assert (out.stat().st_mtime_ns, out.read_bytes()) == written


def test_5_end_to_end(env):
    wf = ws.load_workflow("5_end_to_end_dataset_to_sweep.json")
    result = run("5_end_to_end_dataset_to_sweep.json", env, {("LtxLoraTrain", "name"): "run5"})
    final = env.loras / "run5" / f"run5_step_{STEPS:05d}.safetensors"
    assert final.is_file()
    assert len([o for o in _outputs_of(result, wf, "PreviewImage") if o.get("images")]) == 2  # cache + grid
    table = _texts(result, wf)
    assert "run5" in table and "bleed" in table, table


def _audio_stream_seconds(path: Path) -> tuple[float, float]:
    """(duration in s, peak) of the mp4's decoded audio track; fails when it has none."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        (stream,) = container.streams.audio
        wave = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return wave.shape[1] / stream.rate, float(np.abs(wave).max())


def test_6_audio_video_lora_has_sound(env):
    from trainer_core.demo import write_clips
    from trainer_core.lorafile import metadata as md
    from trainer_core.lorafile.read import read_lora_file

    write_clips(env.root / "demo_clips", count=3)
    wf = ws.load_workflow("6_train_audio_video_lora.json")
    result = run("6_train_audio_video_lora.json", env, {
        ("CheckpointLoaderSimple", "ckpt_name"): TINY_AV,
        ("LTXVAudioVAELoader", "ckpt_name"): TINY_AV,
        ("LtxLoraLoadDataset", "path"): str(env.root / "demo_clips"),
        ("LtxLoraCacheLatents", "folder"): str(env.root / "cache_av"),
        ("LtxLoraTrain", "name"): "run6",
    })
    texts = _texts(result, wf)
    assert "3 clips with audio, 0 without" in texts, texts
    final = env.loras / "run6" / f"run6_step_{STEPS:05d}.safetensors"
    tensors, meta = read_lora_file(final)
    assert (meta[md.AUDIO], meta[md.VIDEO]) == ("generate", "generate")
    audio_b = [v for k, v in tensors.items() if ".audio_attn1." in k and k.endswith(md.LORA_B)]
    assert audio_b and all(v.any() for v in audio_b)  # the audio layers trained
    # in-training previews with sound: 9 frames at the prompt's 25 fps (AAC pads up to one 1024-sample frame)
    previews = sorted((env.loras / "run6" / "previews").glob("*.mp4"))
    assert len(previews) == STEPS // EVERY
    for path in previews:
        seconds, peak = _audio_stream_seconds(path)
        assert 9 / 25 <= seconds <= 9 / 25 + 0.1 and peak > 1e-3, (path.name, seconds, peak)
    # the sweep: base row once + the LoRA at 0.5 and 1.0, x 2 prompts = 6 cells played in turn, and one mp4 per cell
    cells = sorted((env.output / "ltx_sweep").glob("grid_*_cell_*.mp4"))  # workflow 5's silent grid has none
    assert len(cells) == 6
    grid = cells[0].with_name(cells[0].name.split("_cell_")[0] + "_.mp4")
    seconds, peak = _audio_stream_seconds(grid)
    assert 6 * 9 / 24 <= seconds <= 6 * 9 / 24 + 0.1 and peak > 1e-3  # the grid video runs at its fps widget, 24


def test_7_ic_lora_trains_on_references_and_sweeps_guided(env, monkeypatch):
    import folder_paths

    from tests.dataset_media import write_inverted_copy
    from trainer_core.demo import write_clips
    from trainer_core.lorafile import metadata as md
    from trainer_core.lorafile.read import read_lora_file

    clips, references, inputs = env.root / "ic_clips", env.root / "ic_references", env.root / "input"
    write_clips(clips, count=3)
    for folder in (references, inputs):
        folder.mkdir()
    for clip in sorted(clips.glob("*.mp4")):  # stand-ins for edge maps: the clips' colour-inverted copies
        write_inverted_copy(clip, references / clip.name)
    write_inverted_copy(clips / "clip_00.mp4", inputs / "control.mp4")
    monkeypatch.setattr(folder_paths, "input_directory", str(inputs))
    wf = ws.load_workflow("7_train_ic_lora.json")
    result = run("7_train_ic_lora.json", env, {
        ("LtxLoraLoadDataset", "path"): str(clips),
        ("LtxLoraLoadDataset", "references_dir"): str(references),
        ("LtxLoraCacheLatents", "folder"): str(env.root / "cache_ic"),
        ("LtxLoraTrain", "name"): "run7",
        ("LoadVideo", "file"): "control.mp4",
        ("ImageFromBatch", "length"): 9,
        # References at half size need a latent grid of at least 2x2 for the tiny VAE to decode (previews)
        ("LtxLoraLoadDataset", "buckets"): "128x128x9",
        ("LtxLoraPreviewSettings", "width"): 128,
        ("LtxLoraPreviewSettings", "height"): 128,
        ("EmptyLTXVLatentVideo", "width"): 128,
        ("EmptyLTXVLatentVideo", "height"): 128,
    })
    final = env.loras / "run7" / f"run7_step_{STEPS:05d}.safetensors"
    tensors, meta = read_lora_file(final)
    assert meta[md.REFERENCE_DOWNSCALE_FACTOR] == meta[md.REFERENCE_SPATIAL_SCALE_FACTOR] == "2"
    assert tensors and not any("audio" in k for k in tensors)
    assert len(list((env.loras / "run7" / "previews").glob("*.png"))) == STEPS // EVERY
    # base row once + the LoRA at 0.5 and 1.0, x 2 prompts: 6 guided cells in the grid
    assert "run7_step_00004 @ 1" in _texts(result, wf)
    assert len(list((env.output / "ltx_sweep").glob("grid_*.mp4"))) >= 1
