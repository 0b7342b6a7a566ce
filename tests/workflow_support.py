"""Bundled-workflow support for the tests: UI-format graphs, their conversion to ComfyUI's API format, and headless
execution through ComfyUI's own executor.

``ui_to_api`` does what the frontend's ``graphToPrompt`` does for the node kinds our workflows use: it walks each
node's inputs in the order of the node definition (required, then optional), takes widget values from
``widgets_values`` in that order (skipping the frontend's ``control_after_generate`` entry that follows a seed),
and replaces linked inputs by ``[origin_id, origin_slot]``. Frontend-only nodes (notes, reroutes) are dropped;
reroutes are followed. A node type ComfyUI does not know raises ``MissingNodeError``: a bundled workflow must
never reference a node that is not registered.

``GraphBuilder`` writes the UI format (nodes, links, groups with a note each) from the live node definitions, so
widget order and defaults always match the nodes. Import after the ``comfy`` fixture ran.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
WEB = Path(__file__).resolve().parents[1] / "web"
TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its pos
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


class MissingNodeError(RuntimeError):
    """A workflow references a node type that ComfyUI has not registered."""


def node_classes() -> dict[str, type]:
    """ComfyUI's registered node classes (built-in, extras and this pack)."""
    import nodes

    return nodes.NODE_CLASS_MAPPINGS


def input_specs(cls: type) -> list[tuple[str, tuple, bool]]:
    """``(name, spec, is_widget)`` for each input of a node class, in the definition's order."""
    spec = cls.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, s in (spec.get(section) or {}).items():
            kind, opts = s[0], (s[1] if len(s) > 1 and isinstance(s[1], dict) else {})
            # a multi-type input ("FLOAT,INT") is drawn as the widget its ``widgetType`` names
            widget = (isinstance(kind, list) or kind in WIDGET_TYPES or opts.get("widgetType") in WIDGET_TYPES
                      ) and not opts.get("forceInput")
            out.append((name, tuple(s), widget))
    return out


def _has_control(name: str, spec: tuple) -> bool:
    """Whether the frontend adds a "control after generate" widget after this one (explicit, or by name)."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "control_after_generate" in opts:
        return bool(opts["control_after_generate"])
    return spec[0] == "INT" and name in ("seed", "noise_seed")


def output_types(cls: type) -> list[tuple[str, str]]:
    """``(name, type)`` of each output of a node class."""
    types = list(cls.RETURN_TYPES)
    names = list(getattr(cls, "RETURN_NAMES", None) or types)
    return [(n, t if isinstance(t, str) else "COMBO") for n, t in zip(names, types, strict=True)]


def ui_to_api(workflow: dict, classes: dict[str, type] | None = None) -> dict[str, dict]:
    """Convert a UI-format workflow (frontend ``graph.serialize()``) to the API prompt format."""
    classes = node_classes() if classes is None else classes
    by_id = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    missing = sorted({n["type"] for n in workflow["nodes"]} - set(classes) - FRONTEND_ONLY)
    if missing:
        raise MissingNodeError(f"workflow uses node types ComfyUI has not registered: {', '.join(missing)}")

    def source(link_id: int) -> list:
        origin, slot = links[link_id][1], links[link_id][2]
        while by_id[origin]["type"] == "Reroute":  # follow reroutes to the real output
            upstream = by_id[origin]["inputs"][0]["link"]
            origin, slot = links[upstream][1], links[upstream][2]
        return [str(origin), slot]

    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):  # 2 muted, 4 bypassed
            continue
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs: dict[str, Any] = {}
        for name, spec, widget in input_specs(classes[node["type"]]):
            if widget and values:
                inputs[name] = values.pop(0)
                if _has_control(name, spec) and values and values[0] in CONTROL_VALUES:
                    values.pop(0)
            if name in linked:
                inputs[name] = source(linked[name])
        prompt[str(node["id"])] = {
            "class_type": node["type"],
            "inputs": inputs,
            "_meta": {"title": node.get("title") or node["type"]},
        }
    return prompt


def load_workflow(name: str) -> dict:
    """A bundled workflow by file name (``workflows/<name>``)."""
    return json.loads((WORKFLOWS / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- headless execution


class RecordingServer:
    """What ComfyUI's executor needs from its server: ``send_sync`` (recorded) and two attributes."""

    def __init__(self) -> None:
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.messages: list[tuple[str, Any]] = []

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        self.messages.append((event, data))


@dataclass
class RunResult:
    """Outcome of one headless prompt."""

    success: bool
    outputs: dict[str, Any]
    messages: list[tuple[str, Any]] = field(default_factory=list)

    def error(self) -> str:
        """The executor's error message(s), for assertion messages."""
        return json.dumps([m for m in self.messages if m[0] == "execution_error"], default=str, indent=1)[:4000]


def run_prompt(prompt: dict) -> RunResult:
    """Validate ``prompt`` like the server does and execute it with ComfyUI's ``PromptExecutor``."""
    import execution

    prompt_id = str(uuid.uuid4())
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid:
        raise AssertionError(f"ComfyUI refused the prompt: {error}\n{json.dumps(node_errors, default=str)[:4000]}")
    server = RecordingServer()
    executor = execution.PromptExecutor(server, cache_type=False, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    executor.execute(prompt, prompt_id, {}, outputs)
    ui = (executor.history_result or {}).get("outputs", {})
    return RunResult(executor.success, ui, server.messages)


# ---------------------------------------------------------------- writing workflows


@dataclass
class _Group:
    title: str
    note: str
    x: float
    nodes: list[int] = field(default_factory=list)


def chart_height() -> int:
    """Height of the live chart ``web/ltxlora_progress.js`` adds to the Train node (its ``CHART_HEIGHT``)."""
    m = re.search(r"^const CHART_HEIGHT = (\d+);", (WEB / "ltxlora_progress.js").read_text(encoding="utf-8"), re.M)
    if m is None:
        raise ValueError("web/ltxlora_progress.js defines no `const CHART_HEIGHT = <px>;`")
    return int(m[1])


def body_height(node: dict) -> float:
    """The height a node's body takes on the canvas: one row per widget and per input/output slot pair, plus what
    the pack's web extensions add (the Train node's chart). The frontend grows a node to at least this."""
    rows = len(node.get("widgets_values") or []) + max(len(node.get("inputs") or []), len(node.get("outputs") or []))
    extra = chart_height() if node["type"] == "LtxLoraTrain" else 0
    return 60 + 26 * rows + extra


def node_box(node: dict) -> tuple[float, float, float, float]:
    """``(left, top, right, bottom)`` of a node on the canvas, title bar and extension chart included."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, x + w, y + max(h, body_height(node))


class GraphBuilder:
    """Builds a UI-format workflow from live node definitions, group by group (one column per group)."""

    COLUMN = 380
    NODE_WIDTH = 340

    def __init__(self, classes: dict[str, type] | None = None) -> None:
        self.classes = node_classes() if classes is None else classes
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[_Group] = []
        self._y: dict[int, float] = {}

    def group(self, title: str, note: str) -> None:
        """Start a new group (a new column); its note is the group's first node."""
        x = 40 + sum(self.COLUMN for _ in self.groups)
        self.groups.append(_Group(title, note, x))
        self._place({"type": "MarkdownNote", "widgets_values": [note], "inputs": [], "outputs": []}, height=150)

    def extend_note(self, title: str, text: str) -> None:
        """Append ``text`` (a new paragraph) to the note of the group titled ``title``."""
        group = next(g for g in self.groups if g.title == title)
        self.nodes[group.nodes[0] - 1]["widgets_values"][0] += "\n\n" + text

    def _place(self, node: dict, height: float) -> int:
        g = self.groups[-1]
        node_id = len(self.nodes) + 1
        y = self._y.get(len(self.groups), 110.0)
        node.update(id=node_id, pos=[g.x, y], size=[self.NODE_WIDTH, height], flags={}, order=node_id - 1, mode=0)
        node.setdefault("properties", {"Node name for S&R": node["type"]})
        self._y[len(self.groups)] = y + height + 60
        self.nodes.append(node)
        g.nodes.append(node_id)
        return node_id

    def add(self, node_type: str, title: str | None = None, **values: Any) -> Node:
        """Add a node; keyword arguments set widget values, or link an input when given a ``Node`` output."""
        cls = self.classes.get(node_type)
        if cls is None:
            raise MissingNodeError(f"node type {node_type} is not registered in this ComfyUI")
        specs = input_specs(cls)
        unknown = set(values) - {name for name, _, _ in specs}
        if unknown:
            raise KeyError(f"{node_type} has no inputs {sorted(unknown)}")
        widgets, inputs, links = [], [], []
        for name, spec, widget in specs:
            value = values.get(name)
            if isinstance(value, Output):
                links.append((name, value))
            if widget:
                widgets.append(_widget_default(spec) if value is None or isinstance(value, Output) else value)
                if _has_control(name, spec):
                    widgets.append("fixed")
            if not widget or isinstance(value, Output):
                inputs.append({"name": name, "type": _socket_type(spec), "link": None}
                              | ({"widget": {"name": name}} if widget else {}))
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(output_types(cls))]
        node = {"type": node_type, "inputs": inputs, "outputs": outputs, "widgets_values": widgets}
        if title:
            node["title"] = title
        node_id = self._place(node, height=body_height(node))
        for name, out in links:
            self._link(out, node_id, name)
        return Node(self, node_id, cls)

    def _link(self, out: Output, target: int, name: str) -> None:
        link_id = len(self.links) + 1
        origin = self.nodes[out.node - 1]
        origin["outputs"][out.slot]["links"].append(link_id)
        node = self.nodes[target - 1]
        slot = next(i for i, inp in enumerate(node["inputs"]) if inp["name"] == name)
        node["inputs"][slot]["link"] = link_id
        self.links.append([link_id, out.node, out.slot, target, slot, origin["outputs"][out.slot]["type"]])

    def workflow(self) -> dict:
        """The UI-format workflow (schema version 0.4, as ComfyUI's frontend saves it)."""
        groups = []
        for i, g in enumerate(self.groups, start=1):
            bottom = max(self.nodes[n - 1]["pos"][1] + self.nodes[n - 1]["size"][1] for n in g.nodes)
            groups.append({"id": i, "title": g.title, "bounding": [g.x - 20, 40, self.COLUMN - 20, bottom - 10],
                           "color": "#3f789e", "font_size": 24, "flags": {}})
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps([n["type"] for n in self.nodes]))),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": groups,
            "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [0, 0]}},
            "version": 0.4,
        }


@dataclass(frozen=True)
class Output:
    node: int
    slot: int


@dataclass(frozen=True)
class Node:
    builder: GraphBuilder
    id: int
    cls: type

    def __getitem__(self, name: str) -> Output:
        names = [n for n, _ in output_types(self.cls)]
        if name not in names:
            raise KeyError(f"{self.cls.__name__} has outputs {names}, not {name!r}")
        return Output(self.id, names.index(name))


def _socket_type(spec: tuple) -> str:
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else kind


def _widget_default(spec: tuple) -> Any:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if "default" in opts:
        return opts["default"]
    if isinstance(kind, list):
        return kind[0] if kind else ""
    if kind == "COMBO":
        options = opts.get("options") or [""]
        return options[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind]


# ---------------------------------------------------------------- the bundled workflows
# Model files as named in ComfyUI's own LTX-2.3 templates (comfyui-workflow-templates, video_ltx2_3_t2v).
CHECKPOINT = "ltx-2.3-22b-dev-fp8.safetensors"
TEXT_ENCODER = "gemma_3_12B_it_fp4_mixed.safetensors"
CACHE_FOLDER = "ltx_lora_cache/my_dataset"
RUN_NAME = "my_ltx_lora"
PROMPT = "sks, a red fox trots through fresh snow, morning light, handheld camera"
NEGATIVE = "blurry, distorted, low quality, still frame"
OTHER_PROMPT = "a city street at night in the rain, cars passing, neon signs"


def _models(b: GraphBuilder) -> dict[str, Output]:
    b.group("1 · Load LTX-2.3", (
        "## Load LTX-2.3\nThe standard loaders, as in ComfyUI's LTX-2.3 templates. Put the checkpoint "
        f"(`{CHECKPOINT}` or another LTX-2.3 single file) in `models/checkpoints` and the Gemma 3 text encoder "
        f"(`{TEXT_ENCODER}`) in `models/text_encoders`. The trainer uses these loaded models: no second copy."))
    ckpt = b.add("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    te = b.add("LTXAVTextEncoderLoader", text_encoder=TEXT_ENCODER, ckpt_name=CHECKPOINT, device="default")
    return {"model": ckpt["MODEL"], "vae": ckpt["VAE"], "clip": te["CLIP"]}


def _audio_vae(b: GraphBuilder) -> Output:
    """The stock audio VAE loader (audio VAE + vocoder of the same LTX-2.3 file), in the current group."""
    return b.add("LTXVAudioVAELoader", ckpt_name=CHECKPOINT)["Audio VAE"]


def _dataset_and_cache(
    b: GraphBuilder, m: dict[str, Output], preview: bool = True, audio_vae: Output | None = None,
    dataset: dict | None = None,
) -> Output:
    b.group("2 · Dataset", (
        "## Dataset\nSet **path** to a folder of clips/images with same-named `.txt` captions (or an ltx-trainer "
        "`dataset.json`/`.csv`). Each clip is matched to a resolution bucket and trimmed to 8n+1 frames; the report "
        "lists what changes and what is excluded. Nothing is decoded in full here."))
    ds = b.add("LtxLoraLoadDataset", path="/path/to/my_dataset", trigger="sks", **(dataset or {}))
    b.add("PreviewAny", title="Dataset report", source=ds["report"])
    if preview:
        b.add("LtxLoraDatasetPreview", dataset=ds["dataset"])
    b.group("3 · Cache latents", (
        "## Cache latents\nEncodes every clip with the VAE and every caption (plus the empty caption) with the "
        "text encoder into the cache folder under `output/`. Re-running only encodes what changed, so this group "
        "is cheap once done. Preview decodes cached items back to frames to check what the trainer sees."))
    cache = b.add("LtxLoraCacheLatents", dataset=ds["dataset"], vae=m["vae"], clip=m["clip"], folder=CACHE_FOLDER,
                  audio_vae=audio_vae)
    b.add("PreviewAny", title="Cache report", source=cache["report"])
    if preview:
        shown = b.add("LtxLoraPreviewCachedLatents", training_data=cache["training_data"], vae=m["vae"], items="0")
        b.add("PreviewImage", images=shown["images"])
    return cache["training_data"]


def _train(
    b: GraphBuilder, m: dict[str, Output], data: Output, audio_vae: Output | None = None, recipe: dict | None = None,
    lora: dict | None = None,
) -> Node:
    b.group("4 · Training settings", (
        "## Training settings\nLoRA shape, optimizer, recipe, memory and previews. Unconnected sockets use the "
        "defaults (rank 32, lr 1e-4, 1500 steps, gradient checkpointing, bf16). Out of memory? Keep gradient "
        "checkpointing on, use smaller buckets, then rank 16. Previews: a short clip every *every* steps with "
        "ComfyUI's sampler (0 = off)."))
    settings = {
        "lora": b.add("LtxLoraLoraSettings", **(lora or {}))["settings"],
        "optimization": b.add("LtxLoraOptimizerSettings")["settings"],
        "recipe": b.add("LtxLoraRecipeSettings", **(recipe or {}))["settings"],
        "memory": b.add("LtxLoraMemorySettings")["settings"],
        "preview": b.add("LtxLoraPreviewSettings", every=250, prompts=PROMPT)["settings"],
    }
    b.group("5 · Train", (
        "## Train\nTrains on the MODEL ComfyUI loaded. A checkpoint is written to `models/loras/<name>/` every "
        "*every* steps (and at the end), with `config.yaml` and the previews. The node shows a live loss chart, "
        "step, s/step, ETA and GPU memory while it runs, and the latest preview. Cancel keeps a resumable "
        "checkpoint: set **resume_from** to continue."))
    train = b.add("LtxLoraTrain", model=m["model"], training_data=data, vae=m["vae"], clip=m["clip"], name=RUN_NAME,
                  audio_vae=audio_vae, **settings)
    b.add("LtxLoraPlotLoss", loss=train["loss"])
    b.add("PreviewAny", title="LoRA file", source=train["lora_path"])
    return train


def _sweep(
    b: GraphBuilder, m: dict[str, Output], loras: str | Output, strengths: str, audio_vae: Output | None = None,
    reference_clip: str | None = None,
) -> None:
    b.group("6 · Sweep", (
        "## Sweep\n*LTX LoRA Sweep* lists one MODEL, prompt and seed per cell (LoRA/checkpoint × strength × "
        "prompt × seed); strength 0 is the base model, rendered once. The trigger prompt shows the effect, the "
        "unrelated prompt shows bleed. **loras**: file names in `models/loras`, absolute paths, or a run folder "
        f"(e.g. `{RUN_NAME}`: every `_step_N` checkpoint in order)."))
    neg = b.add("CLIPTextEncode", title="Negative prompt", text=NEGATIVE, clip=m["clip"])["CONDITIONING"]
    conds = []
    for title, text in (("Prompt with trigger", PROMPT), ("Prompt without trigger", OTHER_PROMPT)):
        pos = b.add("CLIPTextEncode", title=title, text=text, clip=m["clip"])["CONDITIONING"]
        conds.append(b.add("LTXVConditioning", positive=pos, negative=neg, frame_rate=25.0))
    sweep = b.add("LtxLoraSweep", model=m["model"], loras=loras, strengths=strengths, seeds="42",
                  with_trigger=conds[0]["positive"], without_trigger=conds[1]["positive"])
    b.group("7 · Render cells", (
        "## Render cells\nStock nodes, run once per cell because the sweep outputs lists: same noise and "
        "settings everywhere, only the LoRA and strength change." + ("" if audio_vae is None else (
            " Audio and video are sampled together: an empty audio latent of the same length joins the video "
            "latent (Concat AV Latent), and after sampling each stream is decoded by its own VAE."))))
    latent = b.add("EmptyLTXVLatentVideo", width=768, height=448, length=49, batch_size=1)["LATENT"]
    if audio_vae is not None:
        sound = b.add("LTXVEmptyLatentAudio", frames_number=49, frame_rate=25.0, batch_size=1, audio_vae=audio_vae)
        latent = b.add("LTXVConcatAVLatent", video_latent=latent, audio_latent=sound["Latent"])["latent"]
    positive, negative = sweep["positive"], conds[0]["negative"]
    if reference_clip is not None:  # IC-LoRA: the reference clip guides every cell, at each row's LoRA's factor
        frames = b.add("GetVideoComponents", video=b.add("LoadVideo", file=reference_clip)["VIDEO"])["images"]
        guide = b.add("ImageFromBatch", image=frames, batch_index=0, length=49)["IMAGE"]
        parameters = b.add("GetICLoRAParameters", iclora_model=sweep["model"])["iclora_parameters"]
        guided = b.add("LTXVAddGuide", positive=positive, negative=negative, vae=m["vae"], latent=latent, image=guide,
                       frame_idx=0, strength=1.0, iclora_parameters=parameters)
        positive, negative, latent = guided["positive"], guided["negative"], guided["latent"]
    sampler = b.add("KSampler", model=sweep["model"], seed=sweep["seed"], steps=30, cfg=3.0, sampler_name="euler",
                    scheduler="simple", positive=positive, negative=negative, latent_image=latent)
    samples, audio = sampler["LATENT"], None
    if reference_clip is not None:
        samples = b.add("LTXVCropGuides", positive=positive, negative=negative, latent=samples)["latent"]
    if audio_vae is not None:
        split = b.add("LTXVSeparateAVLatent", av_latent=samples)
        samples = split["video_latent"]
        audio = b.add("LTXVAudioVAEDecode", samples=split["audio_latent"], audio_vae=audio_vae)["Audio"]
    frames = b.add("VAEDecode", samples=samples, vae=m["vae"])["IMAGE"]
    b.group("8 · Comparison grid", (
        "## Comparison grid\nFirst, middle and last frame of every cell, labelled, with effect/bleed numbers "
        "per row and a ranking; a grid video goes to `output/ltx_sweep/`." + ("" if audio is None else (
            " With audio connected the grid video plays the cells one after another, each with its sound, and "
            "every cell is also saved as `grid_NNNNN_cell_NN.mp4` with sound."))))
    grid = b.add("LtxLoraSweepGrid", images=frames, labels=sweep["label"], sweep=sweep["sweep"], audio=audio)
    b.add("PreviewImage", images=grid["grid"])
    b.add("PreviewAny", title="Effect / bleed table", source=grid["table"])


def build_prepare_dataset(b: GraphBuilder) -> None:
    """(a) Prepare and cache a dataset."""
    _dataset_and_cache(b, _models(b))


def build_train(b: GraphBuilder) -> None:
    """(b) Train a LoRA from the cache, with checkpoints and in-training previews."""
    m = _models(b)
    _train(b, m, _dataset_and_cache(b, m, preview=False))


def build_sweep(b: GraphBuilder) -> None:
    """(c) A run's checkpoints x strengths into a comparison grid, rendered with stock sampler nodes."""
    _sweep(b, _models(b), RUN_NAME, "0, 0.5, 1.0")


def build_inspect_convert(b: GraphBuilder) -> None:
    """(d) Inspect a LoRA, convert it to ComfyUI's layout and load it checked."""
    b.group("1 · Load LTX-2.3", (
        f"## Load LTX-2.3\nThe checkpoint (`{CHECKPOINT}` in `models/checkpoints`) the LoRA is checked against."))
    model = b.add("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)["MODEL"]
    b.group("2 · Inspect", (
        "## Inspect\nBase model family (LTX-2, LTX-2.3, ...), key layout, rank/alpha per module and targeted "
        "streams. With the MODEL connected it also lists layers ComfyUI would skip."))
    report = b.add("LtxLoraInspect", lora_name=f"{RUN_NAME}.safetensors", model=model)
    b.add("PreviewAny", title="Inspection report", source=report["report"])
    b.group("3 · Convert", (
        "## Convert\nRewrites a PEFT/diffusers, kohya/musubi or LTX-Video-Trainer LoRA with ComfyUI's key names "
        "into `models/loras` (the source file is never modified). Put the file in `models/loras` (or ComfyUI's "
        "output folder) and give its name."))
    conv = b.add("LtxLoraConvert", source="lora_from_another_trainer.safetensors", output_name="")
    b.add("PreviewAny", title="Conversion report", source=conv["report"])
    b.group("4 · Load checked", (
        "## Load checked\nLike LoraLoaderModelOnly, with separate video and audio strengths; refuses a LoRA made "
        "for another LTX version (an LTX-2 LoRA on LTX-2.3) or with layers the model lacks, unless *force*."))
    loaded = b.add("LtxLoraLoadChecked", model=model, lora_name=f"{RUN_NAME}.safetensors")
    b.add("PreviewAny", title="Load report", source=loaded["report"])


def build_end_to_end(b: GraphBuilder) -> None:
    """(e) Dataset, cache, training and a strength sweep of the trained LoRA in one graph."""
    m = _models(b)
    train = _train(b, m, _dataset_and_cache(b, m))
    _sweep(b, m, train["lora_path"], "0, 0.5, 1.0")  # linked: the sweep waits for the trained file


def build_audio_video(b: GraphBuilder) -> None:
    """(f) An audio+video LoRA: cache the clips' sound, train both streams, preview and sweep them with sound."""
    m = _models(b)
    audio_vae = _audio_vae(b)
    b.extend_note(
        "1 · Load LTX-2.3",
        "**Load LTXV Audio VAE** reads the audio VAE and vocoder from the same checkpoint: it encodes the "
        "clips' sound for the cache and decodes the sound of the previews and the sweep.")
    data = _dataset_and_cache(b, m, preview=False, audio_vae=audio_vae)
    b.extend_note(
        "2 · Dataset",
        "The clips' audio tracks are used (the report says per clip `audio: 2 ch 44.1 kHz` or `no audio "
        "track`); every clip needs one to train audio. The demo clips (`python -m trainer_core demo --out "
        "demo_out` writes them to `demo_out/dataset`) have sound.")
    train = _train(b, m, data, audio_vae=audio_vae, recipe={"audio": "generate"})
    b.extend_note(
        "4 · Training settings",
        "**recipe.audio: generate** trains the audio stream with the video (a clip without audio is a clear "
        "error). With the audio VAE on the Train node the previews (`previews/*.mp4`) have sound.")
    _sweep(b, m, train["lora_path"], "0, 0.5, 1.0", audio_vae=audio_vae)


def build_ic_lora(b: GraphBuilder) -> None:
    """(g) An IC-LoRA: cache clips with their reference (control) clips, train, sweep it guided by a reference."""
    m = _models(b)
    data = _dataset_and_cache(b, m, preview=False, dataset={
        "references_dir": "/path/to/my_dataset/references", "reference_downscale_factor": 2})
    b.extend_note(
        "2 · Dataset",
        "**IC-LoRA**: every clip needs its reference (control) clip, e.g. its depth, pose or edge-map video. "
        "**references_dir** holds one per clip with the clip's file name (`clip_00.mp4` -> "
        "`references/clip_00.mp4`); an ltx-trainer manifest's `reference_video` column works too. "
        "**reference_downscale_factor** 2 caches the references at half width and height.")
    train = _train(b, m, data, recipe={"preset": "ic_lora"})
    b.extend_note(
        "4 · Training settings",
        "*LTX Training Recipe*'s **preset ic_lora** is ltx-trainer's IC-LoRA template: reference_p 1.0 (every "
        "step sees the references, clean and not in the loss), first_frame_p 0.2, audio off, and LoRA targets "
        "video_attention_ffn, each where that widget is at its default (a value you change is kept). The "
        "previews are guided by the training clips' references.")
    _sweep(b, m, train["lora_path"], "0, 0.5, 1.0", reference_clip="my_reference_clip.mp4")
    b.extend_note(
        "7 · Render cells",
        "**IC-LoRA**: a reference (control) clip from ComfyUI's `input` folder guides every cell; *Get Image "
        "from Batch* keeps as many frames as the cells have (**length**, 8n+1). Each cell runs the stock "
        "IC-LoRA graph: *Get IC-LoRA Parameters* reads the LoRA file's reference_downscale_factor, *LTXV Add "
        "Guide* (frame 0, strength 1) adds the reference at that size, *LTXV Crop Guides* removes it after "
        "sampling. The base row (strength 0) has no LoRA, so its guide is added at full size.")


BUNDLED = {
    "1_prepare_and_cache_dataset.json": build_prepare_dataset,
    "2_train_lora_from_cache.json": build_train,
    "3_sweep_checkpoints_x_strengths.json": build_sweep,
    "4_inspect_and_convert_lora.json": build_inspect_convert,
    "5_end_to_end_dataset_to_sweep.json": build_end_to_end,
    "6_train_audio_video_lora.json": build_audio_video,
    "7_train_ic_lora.json": build_ic_lora,
}


def build(name: str) -> dict:
    """The bundled workflow ``name`` built from the live node definitions."""
    b = GraphBuilder()
    BUNDLED[name](b)
    return b.workflow()


def write_all() -> list[Path]:
    """Rewrite every bundled workflow and its thumbnail (run ``python -m tests.workflow_support`` after a node schema
    changed)."""
    from tools.make_thumbnails import write_all as write_thumbnails

    written = []
    for name in BUNDLED:
        path = WORKFLOWS / name
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(build(name), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written + write_thumbnails(WORKFLOWS)


if __name__ == "__main__":
    from tests.comfy_boot import boot, find_comfyui

    boot(find_comfyui())
    for p in write_all():
        print(p)
