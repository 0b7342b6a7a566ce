"""Every node the pack registers, given bad input of each kind that applies to it (corrupt media, a wrong model file,
a wrong cache folder, a path escaping its folder, NaN in a latent, missing files, a bad setting), answers through
ComfyUI's own ``validate_prompt`` and ``PromptExecutor`` with a clear message naming the file or setting: ComfyUI's
refusal when the prompt is queued, or one of the pack's ``UserError``s when the node runs, never another exception
type. Where the right answer is to carry on (one damaged clip among good ones, a LoRA holding NaN inspected), the
node's text output says so. A node without cases here fails the coverage test.

Each case runs a small graph on a tiny LTX-2.3 checkpoint; the node under test is ``"t"``. Test-only nodes stand
in for a user's mistakes mid-graph: ``TestBreak`` deletes, overwrites or fills with NaN a file of a dataset or cache
after the node that made it (a clip replaced while the graph runs, a cache file lost), ``TestValue`` gives any
value (a loss history) and the tiny text encoder stands in for Gemma (12B).

A user error raised while a node runs reaches ComfyUI's error report as its message with a traceback that holds no
frame of ``trainer_core`` (the node cuts it, ``nodes/_node.py``); the full traceback goes to the log. A bug keeps its
frames.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import os
import shutil
import sys
import traceback
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) builds the tiny checkpoint's VAE checks")

TINY = "tiny_bad_inputs.safetensors"
OTHER = "tiny_other_vae.safetensors"  # the same architecture, other weights (another VAE)
BUCKETS = "64x64x9;64x64x1"


@dataclass
class Case:
    """One bad input: the graph around node ``"t"`` and what its answer must contain."""

    node: str
    kind: str
    graph: Callable[[types.SimpleNamespace, str], dict]  # (env, case id) -> prompt
    expect: tuple[str, ...]
    outcome: str = "refused"  # "refused" (validation or UserError), QUEUED or "reported" (runs; its text says so)


QUEUED = "refused when queued"  # the node's validate_inputs refuses it: ComfyUI runs nothing of the prompt


# ----------------------------------------------------------------------------------------------- graph pieces


def n(class_type: str, **inputs) -> dict:
    """A prompt node with every widget at its default except ``inputs``."""
    import nodes

    spec = nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()
    values = {}
    for name, s in (spec.get("required") or {}).items():
        opts = s[1] if len(s) > 1 and isinstance(s[1], dict) else {}
        if "default" in opts:
            values[name] = opts["default"]
        elif isinstance(s[0], list) and s[0]:
            values[name] = s[0][0]
        elif s[0] == "COMBO" and opts.get("options"):
            values[name] = opts["options"][0]
    return {"class_type": class_type, "inputs": {**values, **inputs}}


def show(output: int = 0) -> dict:
    """An output node after ``"t"``, so a node that is not an output node runs."""
    return {"show": {"class_type": "PreviewAny", "inputs": {"source": ["t", output]}}}


def model(name: str = TINY, key: str = "ck") -> dict:
    return {key: n("CheckpointLoaderSimple", ckpt_name=name)}


def dataset(env, case: str, path: Path | None = None) -> dict:
    """A private copy of the good dataset (cases damage it), loaded with tiny buckets."""
    if path is None:
        path = env.root / "datasets" / case
        shutil.copytree(env.dataset, path, dirs_exist_ok=True)
    return {"ds": n("LtxLoraLoadDataset", path=str(path), buckets=BUCKETS, trigger="sks")}


def broken(source: list, target: str, how: str, key: str = "brk") -> dict:
    return {key: {"class_type": "LtxLoraTestBreak", "inputs": {"value": source, "target": target, "how": how}}}


def cache(env, case: str, vae_ckpt: str = TINY, ds: list | None = None) -> dict:
    """Dataset -> Cache LTX Training Latents (video VAE of ``vae_ckpt``, tiny text encoder) into the case's folder."""
    graph = {**dataset(env, case), **model(vae_ckpt, "vk"), "te": n("LtxLoraTestTinyClip")}
    graph["cache"] = n("LtxLoraCacheLatents", dataset=ds or ["ds", 0], vae=["vk", 2], clip=["te", 0],
                       folder=str(env.root / "caches" / case))
    return graph


def train(env, case: str, data: list | None = None, **widgets) -> dict:
    """The Train node on the tiny MODEL: 2 steps, rank 4, float32."""
    graph = {
        **model(),
        "lo": n("LtxLoraLoraSettings", rank=4, alpha=4.0),
        "op": n("LtxLoraOptimizerSettings", steps=2),
        "me": n("LtxLoraMemorySettings", mixed_precision="no"),
    }
    inputs = {"model": ["ck", 0], "lora": ["lo", 0], "optimization": ["op", 0], "memory": ["me", 0],
              "name": case, "every": 1, "config_yaml": "", "resume_from": ""}
    if data is not None:
        inputs["training_data"] = data
    graph["t"] = n("LtxLoraTrain", **{**inputs, **widgets})
    return graph


def write_yaml(env, case: str, cfg: dict) -> str:
    """A YAML file in ComfyUI's input folder; its name there (the Train node reads config_yaml from there)."""
    (env.input / f"{case}.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return f"{case}.yaml"


def sweep(env, loras: str, **widgets) -> dict:
    return {
        **model(),
        "te": n("LtxLoraTestTinyClip"),
        "enc": n("CLIPTextEncode", text="a sks clip", clip=["te", 0]),
        "t": n("LtxLoraSweep", model=["ck", 0], loras=loras, with_trigger=["enc", 0], **widgets),
        **show(5),
    }


# ----------------------------------------------------------------------------------------------- the cases

OUTSIDE = "/etc/hostname"  # exists on every Linux machine and lies outside every folder the nodes read

CASES: dict[str, Case] = {
    # -- dataset
    "dataset-missing-folder": Case(
        "LtxLoraLoadDataset", "missing files",
        lambda env, c: {**dataset(env, c, env.root / "nope"), "t": None, **show(1)},
        ("nope",), QUEUED),
    "dataset-is-a-file": Case(
        "LtxLoraLoadDataset", "wrong file",
        lambda env, c: {**dataset(env, c, env.root / "notes.txt"), "t": None, **show(1)},
        ("notes.txt",), QUEUED),
    "dataset-only-corrupt-media": Case(
        "LtxLoraLoadDataset", "corrupt media",
        lambda env, c: {**dataset(env, c, env.bad_media), "t": None, **show(1)},
        ("notes.mp4", "empty.mov")),
    "dataset-escaping-entries": Case(
        "LtxLoraLoadDataset", "path escaping its folder",
        lambda env, c: {**dataset(env, c, env.escaping), "t": None, **show(1)},
        ("link.mp4", "../outside.mp4")),
    "dataset-manifest-names-missing-files": Case(
        "LtxLoraLoadDataset", "missing files",
        lambda env, c: {**dataset(env, c, env.missing_manifest), "t": None, **show(1)},
        ("gone.mp4",)),
    "trim-bad-policy": Case(
        "LtxLoraTrimFrames", "bad setting",
        lambda env, c: {"img": n("EmptyImage", width=64, height=64, batch_size=10),
                        "t": n("LtxLoraTrimFrames", images=["img", 0], policy="middle"), **show()},
        ("policy", "middle")),
    "preview-clip-deleted": Case(
        "LtxLoraDatasetPreview", "missing files",
        lambda env, c: {**dataset(env, c), **broken(["ds", 0], "clip0.mp4", "delete"),
                        "t": n("LtxLoraDatasetPreview", dataset=["brk", 0])},
        ("clip0.mp4: preview failed",), "reported"),
    "preview-clip-corrupt": Case(
        "LtxLoraDatasetPreview", "corrupt media",
        lambda env, c: {**dataset(env, c), **broken(["ds", 0], "clip1.mp4", "garbage"),
                        "t": n("LtxLoraDatasetPreview", dataset=["brk", 0])},
        ("clip1.mp4: preview failed",), "reported"),
    # -- cache
    "cache-clip-corrupt": Case(
        "LtxLoraCacheLatents", "corrupt media",
        lambda env, c: {**cache(env, c, ds=["brk", 0]), **broken(["ds", 0], "clip1.mp4", "garbage"),
                        "t": None, **show(1)},
        ("clip1.mp4",), "reported"),
    "cache-clip-deleted": Case(
        "LtxLoraCacheLatents", "missing files",
        lambda env, c: {**cache(env, c, ds=["brk", 0]), **broken(["ds", 0], "clip0.mp4", "delete"),
                        "t": None, **show(1)},
        ("clip0.mp4",), "reported"),
    "cache-folder-climbs-out": Case(
        "LtxLoraCacheLatents", "path escaping its folder",
        lambda env, c: {**cache(env, c), "t": None, **show(1), "patch": {"folder": "../../escaped_cache"}},
        ("../../escaped_cache",), QUEUED),
    "cache-folder-is-a-file": Case(
        "LtxLoraCacheLatents", "wrong cache folder",
        lambda env, c: {**cache(env, c), "t": None, **show(1), "patch": {"folder": str(env.root / "notes.txt")}},
        ("notes.txt",), QUEUED),
    "cache-folder-has-a-broken-manifest": Case(
        "LtxLoraCacheLatents", "wrong cache folder",
        lambda env, c: {**cache(env, c), "t": None, **show(1), "patch": {"folder": str(env.broken_cache)}},
        ("broken_cache",), QUEUED),
    "cache-audio-vae-as-video-vae": Case(
        "LtxLoraCacheLatents", "wrong model file",
        lambda env, c: {**cache(env, c), "av": n("LTXVAudioVAELoader", ckpt_name=TINY), "t": None, **show(1),
                        "patch": {"vae": ["av", 0]}},
        ("VAE input is not an LTX-2.x video VAE",)),
    "preview-cache-bad-items": Case(
        "LtxLoraPreviewCachedLatents", "bad setting",
        lambda env, c: {**cache(env, c), **model(),
                        "t": n("LtxLoraPreviewCachedLatents", training_data=["cache", 0], vae=["ck", 2], items="7"),
                        **show(1)},
        ("item 7",)),
    "preview-cache-latent-deleted": Case(
        "LtxLoraPreviewCachedLatents", "missing files",
        lambda env, c: {**cache(env, c), **model(), **broken(["cache", 0], "latents/clip0*", "delete"),
                        "t": n("LtxLoraPreviewCachedLatents", training_data=["brk", 0], vae=["ck", 2], items="0"),
                        **show(1)},
        ("latents/clip0",)),
    "preview-cache-nan-latent": Case(
        "LtxLoraPreviewCachedLatents", "NaN in a latent",
        lambda env, c: {**cache(env, c), **model(), **broken(["cache", 0], "latents/clip0*", "nan"),
                        "t": n("LtxLoraPreviewCachedLatents", training_data=["brk", 0], vae=["ck", 2], items="0"),
                        **show(1)},
        ("clip0",)),
    "preview-cache-other-vae": Case(
        "LtxLoraPreviewCachedLatents", "wrong model file",
        lambda env, c: {**cache(env, c), **model(OTHER),
                        "t": n("LtxLoraPreviewCachedLatents", training_data=["cache", 0], vae=["ck", 2], items="0"),
                        **show(1)},
        ("VAE",), "reported"),
    # -- LoRA files
    "convert-missing": Case(
        "LtxLoraConvert", "missing files",
        lambda env, c: {"t": n("LtxLoraConvert", source="nope.safetensors")}, ("nope.safetensors",)),
    "convert-text-file": Case(
        "LtxLoraConvert", "wrong model file",
        lambda env, c: {"t": n("LtxLoraConvert", source="text.safetensors")}, ("text.safetensors",)),
    "convert-truncated": Case(
        "LtxLoraConvert", "corrupt file",
        lambda env, c: {"t": n("LtxLoraConvert", source="truncated.safetensors")}, ("truncated.safetensors",)),
    "convert-source-outside": Case(
        "LtxLoraConvert", "path escaping its folder",
        lambda env, c: {"t": n("LtxLoraConvert", source=str(env.root / "elsewhere.safetensors"))},
        ("source", "elsewhere.safetensors", "lies outside"), QUEUED),
    "convert-output-escapes": Case(
        "LtxLoraConvert", "path escaping its folder",
        lambda env, c: {"t": n("LtxLoraConvert", source="good.safetensors", output_name="../escaped")},
        ("output_name", "../escaped"), QUEUED),
    "convert-nan": Case(
        "LtxLoraConvert", "NaN in a LoRA",
        lambda env, c: {"t": n("LtxLoraConvert", source="nan.safetensors", output_name=f"{c}.safetensors")},
        ("DAMAGED",), "reported"),
    "inspect-not-listed": Case(
        "LtxLoraInspect", "missing files",
        lambda env, c: {"t": n("LtxLoraInspect", lora_name="nope.safetensors")}, ("lora_name", "nope.safetensors")),
    "inspect-text-file": Case(
        "LtxLoraInspect", "wrong model file",
        lambda env, c: {"t": n("LtxLoraInspect", lora_name="text.safetensors")}, ("text.safetensors",)),
    "inspect-truncated": Case(
        "LtxLoraInspect", "corrupt file",
        lambda env, c: {"t": n("LtxLoraInspect", lora_name="truncated.safetensors")}, ("truncated.safetensors",)),
    "inspect-nan": Case(
        "LtxLoraInspect", "NaN in a LoRA",
        lambda env, c: {"t": n("LtxLoraInspect", lora_name="nan.safetensors")}, ("DAMAGED",), "reported"),
    "load-text-file": Case(
        "LtxLoraLoadChecked", "wrong model file",
        lambda env, c: {**model(), "t": n("LtxLoraLoadChecked", model=["ck", 0], lora_name="text.safetensors"),
                        **show(1)},
        ("text.safetensors",)),
    "load-truncated": Case(
        "LtxLoraLoadChecked", "corrupt file",
        lambda env, c: {**model(), "t": n("LtxLoraLoadChecked", model=["ck", 0],
                                          lora_name="truncated.safetensors"), **show(1)},
        ("truncated.safetensors",)),
    "load-nan": Case(
        "LtxLoraLoadChecked", "NaN in a LoRA",
        lambda env, c: {**model(), "t": n("LtxLoraLoadChecked", model=["ck", 0], lora_name="nan.safetensors",
                                          force=True), **show(1)},
        ("nan.safetensors", "NaN")),
    "load-other-family": Case(
        "LtxLoraLoadChecked", "wrong model file",
        lambda env, c: {**model(), "t": n("LtxLoraLoadChecked", model=["ck", 0], lora_name="ltx2.safetensors"),
                        **show(1)},
        ("ltx2.safetensors", "LTX-2")),
    # -- settings nodes: a value outside the schema's bounds or choices
    "lora-settings-rank-0": Case(
        "LtxLoraLoraSettings", "bad setting", lambda env, c: {"t": n("LtxLoraLoraSettings", rank=0), **show()},
        ("rank",)),
    "optimizer-settings-bad-choice": Case(
        "LtxLoraOptimizerSettings", "bad setting",
        lambda env, c: {"t": n("LtxLoraOptimizerSettings", optimizer="sgd9000"), **show()}, ("optimizer", "sgd9000")),
    "recipe-settings-bad-probability": Case(
        "LtxLoraRecipeSettings", "bad setting",
        lambda env, c: {"t": n("LtxLoraRecipeSettings", first_frame_p=1.5), **show()}, ("first_frame_p",)),
    "memory-settings-bad-choice": Case(
        "LtxLoraMemorySettings", "bad setting",
        lambda env, c: {"t": n("LtxLoraMemorySettings", mixed_precision="fp4"), **show()},
        ("mixed_precision", "fp4")),
    "preview-settings-bad-size": Case(
        "LtxLoraPreviewSettings", "bad setting",
        lambda env, c: {"t": n("LtxLoraPreviewSettings", width=-64), **show()}, ("width",)),
    # -- training
    "train-no-data": Case("LtxLoraTrain", "missing files", lambda env, c: train(env, c), ("training_data",), QUEUED),
    "train-yaml-missing": Case(
        "LtxLoraTrain", "missing files", lambda env, c: train(env, c, config_yaml="nope.yaml"), ("nope.yaml",), QUEUED),
    "train-yaml-not-utf8": Case(
        "LtxLoraTrain", "wrong file", lambda env, c: train(env, c, config_yaml=str(env.latin1_yaml)),
        ("latin1.yaml", "UTF-8"), QUEUED),
    "train-yaml-is-a-folder": Case(
        "LtxLoraTrain", "wrong file", lambda env, c: train(env, c, config_yaml="configs"), ("configs", "is a folder"),
        QUEUED),
    "train-yaml-outside": Case(
        "LtxLoraTrain", "path escaping its folder",
        lambda env, c: train(env, c, ["cache", 0], config_yaml=str(env.root / "outside.yaml")) | cache(env, c),
        ("config_yaml", "outside.yaml", "lies outside"), QUEUED),
    "train-yaml-data-empty": Case(
        "LtxLoraTrain", "missing files", lambda env, c: train(env, c, config_yaml=write_yaml(env, c, {"data": ""})),
        ("training_data",), QUEUED),
    "train-yaml-data-is-no-cache": Case(
        "LtxLoraTrain", "wrong cache folder",
        lambda env, c: train(env, c, config_yaml=write_yaml(env, c, {"data": str(env.bad_media)})),
        ("bad_media",)),
    "train-name-climbs-out": Case(
        "LtxLoraTrain", "path escaping its folder",
        lambda env, c: train(env, c, ["cache", 0], name="../../escaped") | cache(env, c), ("../../escaped",), QUEUED),
    "train-resume-outside": Case(
        "LtxLoraTrain", "path escaping its folder",
        lambda env, c: train(env, c, ["cache", 0], resume_from=OUTSIDE) | cache(env, c), (OUTSIDE,), QUEUED),
    "train-resume-missing": Case(
        "LtxLoraTrain", "missing files",
        lambda env, c: train(env, c, ["cache", 0], resume_from="nope_step_00001.safetensors") | cache(env, c),
        ("nope_step_00001.safetensors",)),
    "train-nan-latent": Case(
        "LtxLoraTrain", "NaN in a latent",
        lambda env, c: train(env, c, ["brk", 0]) | cache(env, c) | broken(["cache", 0], "latents/clip0*", "nan"),
        ("clip0",)),
    "train-latent-deleted": Case(
        "LtxLoraTrain", "missing files",
        lambda env, c: train(env, c, ["brk", 0]) | cache(env, c) | broken(["cache", 0], "latents/clip0*", "delete"),
        ("latents/clip0",)),
    "train-cache-of-another-vae": Case(
        "LtxLoraTrain", "wrong cache folder",
        lambda env, c: train(env, c, ["cache", 0]) | cache(env, c, vae_ckpt=OTHER),
        ("was encoded by another video VAE", "the video VAE inside the MODEL's checkpoint", TINY)),
    "train-wired-vae-is-another": Case(
        "LtxLoraTrain", "wrong model file",
        lambda env, c: train(env, c, ["cache", 0], vae=["ok", 2]) | cache(env, c) | model(OTHER, "ok"),
        ("was encoded by another video VAE", "the VAE wired into the Train node")),
    "plot-nan-loss": Case(
        "LtxLoraPlotLoss", "NaN in a latent",  # the loss of a diverged step
        lambda env, c: {"v": {"class_type": "LtxLoraTestValue", "inputs": {"text": '{"loss": [1.0, NaN, 0.5]}'}},
                        "t": n("LtxLoraPlotLoss", loss=["v", 0])},
        ("1 of 3 losses are NaN or Inf (step 2): not drawn",), "reported"),
    "plot-bad-smoothing": Case(
        "LtxLoraPlotLoss", "bad setting",
        lambda env, c: {"v": {"class_type": "LtxLoraTestValue", "inputs": {"text": '{"loss": [1.0, 0.5]}'}},
                        "t": n("LtxLoraPlotLoss", loss=["v", 0], smoothing=1.5)},
        ("smoothing",)),
    # -- sweep
    "sweep-outside": Case(
        "LtxLoraSweep", "path escaping its folder", lambda env, c: sweep(env, str(env.root / "elsewhere.safetensors")),
        ("elsewhere.safetensors", "outside the LoRA folders")),
    "sweep-missing": Case(
        "LtxLoraSweep", "missing files", lambda env, c: sweep(env, "nope.safetensors"), ("nope.safetensors",)),
    "sweep-text-file": Case(
        "LtxLoraSweep", "wrong model file", lambda env, c: sweep(env, "text.safetensors"), ("text.safetensors",)),
    "sweep-nan": Case(
        "LtxLoraSweep", "NaN in a LoRA", lambda env, c: sweep(env, "nan.safetensors"), ("nan.safetensors", "NaN")),
    "sweep-bad-strengths": Case(
        "LtxLoraSweep", "bad setting", lambda env, c: sweep(env, "good.safetensors", strengths="0, lots"),
        ("strengths", "lots")),
    "grid-prefix-climbs-out": Case(
        "LtxLoraSweepGrid", "path escaping its folder",
        lambda env, c: {"img": n("EmptyImage", width=64, height=64, batch_size=9),
                        "lab": {"class_type": "LtxLoraTestValue", "inputs": {"text": '"cell"'}},
                        "t": n("LtxLoraSweepGrid", images=["img", 0], labels=["lab", 0],
                               filename_prefix="../../escaped/grid")},
        ("filename_prefix", "../../escaped/grid"), QUEUED),
}


# ----------------------------------------------------------------------------------------------- test-only nodes


def _test_nodes(comfy_root: Path) -> dict[str, type]:
    from comfy_api.latest import io

    from tests.cache.test_cache_comfy import tiny_ltx_clip

    class TinyClip(io.ComfyNode):
        """Test only: ComfyUI's LTX-2.3 text encoder classes around a tiny random Gemma."""

        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(node_id="LtxLoraTestTinyClip", inputs=[], outputs=[io.Clip.Output()])

        @classmethod
        def execute(cls) -> io.NodeOutput:
            return io.NodeOutput(tiny_ltx_clip(comfy_root))

    class Break(io.ComfyNode):
        """Test only: damages the files matching ``target`` (a glob) in a dataset's or cache's folder, passes the
        value on: deleted, overwritten with junk, or (a tensor file) every value NaN."""

        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id="LtxLoraTestBreak",
                inputs=[io.AnyType.Input("value"), io.String.Input("target"), io.String.Input("how")],
                outputs=[io.AnyType.Output()],
            )

        @classmethod
        def execute(cls, value, target: str, how: str) -> io.NodeOutput:
            base = Path(getattr(value, "folder", None) or value.root)
            files = sorted(base.glob(target))
            assert files, f"nothing matches {target} in {base}"
            for f in files:
                if how == "delete":
                    f.unlink()
                elif how == "garbage":
                    f.write_bytes(b"\x00junk" * 64)
                else:
                    save_file({k: torch.full_like(v, math.nan) for k, v in load_file(f).items()}, str(f))
            return io.NodeOutput(value)

    class Value(io.ComfyNode):
        """Test only: any JSON value (NaN allowed) on an any-type output."""

        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(node_id="LtxLoraTestValue", inputs=[io.String.Input("text")],
                             outputs=[io.AnyType.Output()])

        @classmethod
        def execute(cls, text: str) -> io.NodeOutput:
            return io.NodeOutput(json.loads(text))

    return {c.define_schema().node_id: c for c in (TinyClip, Break, Value)}


# ----------------------------------------------------------------------------------------------- environment


def _write_files(root: Path, loras: Path) -> types.SimpleNamespace:
    from tests.cache.test_cache_core import make_dataset
    from tests.dataset_media import write_video
    from tests.lorafile.test_lorafile_models import ALL_BLOCK_LINEARS, fabricate
    from trainer_core.lorafile.layouts import to_layout
    from trainer_core.lorafile.write import save_lora_file
    from trainer_core.ltxcore.tiny import write_tiny_checkpoint

    ckpts = root / "checkpoints"
    tiny = write_tiny_checkpoint(ckpts / TINY, audio_vae=True)
    write_tiny_checkpoint(ckpts / OTHER, seed=1)
    ltx2 = write_tiny_checkpoint(root / "ltx2.safetensors", family="ltx-2")
    good = to_layout(fabricate(tiny, ALL_BLOCK_LINEARS, seed=1), "comfy")
    save_lora_file(loras / "good.safetensors", good, {})
    save_lora_file(root / "elsewhere.safetensors", good, {})
    save_lora_file(loras / "ltx2.safetensors", to_layout(fabricate(ltx2, ALL_BLOCK_LINEARS, seed=2), "comfy"),
                   {"ltxlora.base_model": "ltx-2"})
    nan = dict(good)
    first = sorted(k for k in nan if k.endswith("lora_B.weight") or k.endswith("lora_up.weight"))[0]
    nan[first] = torch.full_like(nan[first], math.nan)
    save_lora_file(loras / "nan.safetensors", nan, {})
    (loras / "text.safetensors").write_text("not a tensor file\n", encoding="utf-8")
    data = (loras / "good.safetensors").read_bytes()
    (loras / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("just some notes\n", encoding="utf-8")
    (root / "input" / "latin1.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    (root / "input" / "configs").mkdir()
    (root / "outside.yaml").write_text("name: outside\n", encoding="utf-8")
    bad_media = root / "bad_media"
    bad_media.mkdir()
    (bad_media / "notes.mp4").write_text("not a video\n", encoding="utf-8")
    (bad_media / "empty.mov").write_bytes(b"")
    write_video(root / "outside.mp4", frames=9, size=(64, 64))
    escaping = root / "escaping"
    escaping.mkdir()
    (escaping / "link.mp4").symlink_to(root / "outside.mp4")
    (escaping / "link.txt").write_text("a linked clip", encoding="utf-8")
    (escaping / "dataset.json").write_text(json.dumps([{"media_path": "../outside.mp4", "caption": "out"},
                                                       {"media_path": "link.mp4", "caption": "link"}]))
    missing = root / "missing_manifest"
    missing.mkdir()
    (missing / "dataset.json").write_text(json.dumps([{"media_path": "gone.mp4", "caption": "gone"}]))
    broken_cache = root / "broken_cache"
    broken_cache.mkdir()
    (broken_cache / "manifest.json").write_text("{not json", encoding="utf-8")
    return types.SimpleNamespace(root=root, dataset=make_dataset(root / "dataset"), bad_media=bad_media,
                                 escaping=escaping, missing_manifest=missing, broken_cache=broken_cache,
                                 input=root / "input", latin1_yaml=root / "input" / "latin1.yaml")


@pytest.fixture(scope="module")
def env(comfy, tmp_path_factory):
    import folder_paths

    import nodes
    from tests.comfy_boot import find_comfyui

    root = tmp_path_factory.mktemp("node_bad_inputs")
    loras, output, input_dir = root / "loras", root / "output", root / "input"
    for folder in (loras, output, input_dir):
        folder.mkdir()
    saved = {k: folder_paths.folder_names_and_paths[k] for k in ("checkpoints", "loras")}
    folder_paths.folder_names_and_paths["checkpoints"] = ([str(root / "checkpoints")], saved["checkpoints"][1])
    folder_paths.folder_names_and_paths["loras"] = ([str(loras)], saved["loras"][1])
    folder_paths.filename_list_cache.clear()
    previous_output, previous_input = folder_paths.get_output_directory(), folder_paths.get_input_directory()
    folder_paths.set_output_directory(str(output))
    folder_paths.set_input_directory(str(input_dir))
    extra = _test_nodes(find_comfyui())
    nodes.NODE_CLASS_MAPPINGS.update(extra)
    try:
        yield _write_files(root, loras)
    finally:
        for key in extra:
            del nodes.NODE_CLASS_MAPPINGS[key]
        folder_paths.folder_names_and_paths.update(saved)
        folder_paths.filename_list_cache.clear()
        folder_paths.set_output_directory(previous_output)
        folder_paths.set_input_directory(previous_input)


# ----------------------------------------------------------------------------------------------- running a case


@dataclass
class Answer:
    how: str  # "refused" (ComfyUI's validation), "error" (the node raised), "ok"
    message: str
    exception_type: str = ""
    node: str = ""
    traceback: tuple[str, ...] = ()  # ComfyUI's error report: traceback.format_tb of the raised exception


def build(case_id: str, env) -> dict:
    case = CASES[case_id]
    graph = case.graph(env, case_id)
    patch = graph.pop("patch", {})
    if graph.get("t") is None:  # the node under test is one of the graph's pieces (dataset, cache)
        key = {"LtxLoraLoadDataset": "ds", "LtxLoraCacheLatents": "cache"}[case.node]
        graph["t"] = graph.pop(key)
        for node in graph.values():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and value and value[0] == key:
                    node["inputs"][name] = ["t", value[1]]
    graph["t"]["inputs"].update(patch)
    assert graph["t"]["class_type"] == case.node, case_id
    return graph


def answer(prompt: dict) -> Answer:
    import execution
    import folder_paths

    from tests.workflow_support import RecordingServer

    folder_paths.filename_list_cache.clear()
    prompt_id = str(uuid.uuid4())
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid:
        return Answer("refused", json.dumps({"error": error, "nodes": node_errors}, default=str))
    server = RecordingServer()
    executor = execution.PromptExecutor(server, cache_type=False, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    executor.execute(prompt, prompt_id, {}, outputs)
    if executor.success:
        ui = (executor.history_result or {}).get("outputs", {})
        return Answer("ok", json.dumps({k: ui[k] for k in ("t", "show") if k in ui}, default=str))
    (err,) = [m[1] for m in executor.status_messages if m[0] == "execution_error"]
    return Answer("error", err["exception_message"], err["exception_type"], err["node_id"], tuple(err["traceback"]))


def core_frames(got: Answer) -> list[str]:
    """The frames of ComfyUI's error report that lie in ``trainer_core``."""
    return [f for f in got.traceback if f"{os.sep}trainer_core{os.sep}" in f.splitlines()[0]]


def is_user_error(comfy, exception_type: str) -> bool:
    """Whether ComfyUI's ``module.Class`` name of the raised exception is one of the pack's ``UserError``s."""
    module, _, name = exception_type.rpartition(".")
    if module not in sys.modules:
        return False
    cls = getattr(sys.modules[module], name, None)
    user_error = importlib.import_module(f"{comfy.__name__}.trainer_core.errors").UserError
    return isinstance(cls, type) and issubclass(cls, user_error)


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_gives_a_clear_message(comfy, env, case_id):
    case = CASES[case_id]
    got = answer(build(case_id, env))
    print(case_id, got)  # shown with -rP: what each node answered
    if case.outcome == QUEUED:
        assert got.how == "refused", f"{case_id}: not refused when the prompt was queued: {got}"
    if case.outcome == "reported":
        assert got.how == "ok", f"{case_id}: expected the node to carry on and say so; got {got}"
    elif got.how == "error":
        assert got.node == "t", f"{case_id}: another node failed first: {got}"
        assert is_user_error(comfy, got.exception_type), f"{case_id}: not a user error: {got}"
        assert not got.message.startswith(("Traceback", "\n")), f"{case_id}: the message is not first: {got}"
        assert core_frames(got) == [], f"{case_id}: trainer_core frames in ComfyUI's report: {got.traceback}"
    else:
        assert got.how == "refused", f"{case_id}: the bad input was accepted: {got.message[:2000]}"
        assert '"t"' in got.message, f"{case_id}: another node was refused: {got.message[:2000]}"
    for text in case.expect:
        assert text in got.message, f"{case_id}: {text!r} not in the answer: {got.message[:3000]}"


def test_a_user_errors_full_traceback_goes_to_the_log(comfy, env, caplog):
    with caplog.at_level(logging.INFO):
        got = answer(build("preview-cache-bad-items", env))
    assert got.how == "error" and core_frames(got) == []
    (logged,) = [r for r in caplog.records if r.exc_info and r.exc_info[1] is not None
                 and "item 7 does not exist" in str(r.exc_info[1])]
    assert logged.levelno == logging.INFO and "LtxLoraPreviewCachedLatents" in logged.getMessage()
    frames = [f.filename for f in traceback.extract_tb(logged.exc_info[2])]
    assert any(f"{os.sep}trainer_core{os.sep}" in f for f in frames), frames


def test_a_bug_in_a_node_keeps_its_frames(comfy, env):
    """Trim Frames given a list instead of an IMAGE (a wiring no user can make; here an any-type test node does):
    the AttributeError inside trainer_core is a bug, and ComfyUI's report keeps the frame where it happened."""
    got = answer({"v": {"class_type": "LtxLoraTestValue", "inputs": {"text": "[1, 2, 3]"}},
                  "t": n("LtxLoraTrimFrames", images=["v", 0]), **show()})
    assert got.how == "error" and got.node == "t" and got.exception_type == "AttributeError", got
    assert any("frames.py" in f for f in core_frames(got)), got.traceback


def test_every_node_cuts_its_user_errors(comfy):
    pack_node = importlib.import_module(f"{comfy.__name__}.nodes._node").PackNode
    assert [k for k, cls in comfy.NODE_CLASS_MAPPINGS.items() if not issubclass(cls, pack_node)] == []


def test_every_node_has_cases(comfy):
    covered = {case.node for case in CASES.values()}
    assert set(comfy.NODE_CLASS_MAPPINGS) - covered == set()
