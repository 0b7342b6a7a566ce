"""Where a training step's host-side work goes, audio+video against video-only: ops, launches, compiles, syncs.

One training step of the pack's Trainer, profiled after warm-up, for each stream mix (``av``: audio+video, ``video``:
video-only) and backbone (``comfy``: ComfyUI's LTXAVModel loaded from a checkpoint file by ComfyUI's loader, as the
Train node gets it, blocks compiled and checkpointed; ``ltxcore``: ltx-core's model, the headless backbone, eager).
Per step it prints:

- aten ops dispatched (every ``aten::`` call the profiler sees, nested calls included), and those outside the compiled
  blocks (no "Torch-Compiled Region" / compiled function above them): the eager work around the blocks;
- on CUDA: kernels launched and host<->device copies;
- syncs: ``aten::_local_scalar_dense`` (``.item()``, ``bool(tensor)``, ``.tolist()``; host tensors too, so the CPU
  optimizer's per-parameter step counts show here), ``aten::nonzero`` and, on CUDA, stream/device synchronisations;
- torch.compile: graph breaks and graphs compiled during the measured steps (a recompile across steps shows here);
- calls of comfy-kitchen's fp8 dequantize op (a Python call per quantized Linear where it is not traced) and of the
  compiled blocks;
- the ops (and on CUDA the launches) per part of the step: the ComfyUI model's own steps outside the blocks (input
  processing, timestep embeddings, positions, context, output), the blocks, backward, optimizer, LoRA master copies.

On the CPU with ``--tiny`` the counts are what to compare (host work per op is similar on any machine; the tiny
model's compute is negligible, so s/step there is mostly host overhead plus the CPU-only per-parameter optimizer). On
a GPU each launch costs a few microseconds of host time. The optimizer is fused on CUDA and per parameter on the CPU.

    .venv/bin/python bench/bench_step_ops.py --tiny                          # CPU, tiny real-architecture models
    .venv/bin/python bench/bench_step_ops.py --tiny --layers 8 --time-steps 5 --backbones comfy
    python3 bench/bench_step_ops.py --dtype fp8 --streamed                   # CUDA, full size (writes a 23 GB file)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch._dynamo

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from gpu_models import boot_comfyui, default_comfyui, model_config, training_data  # noqa: E402

log = logging.getLogger("bench_step_ops")

FULL_GEOMETRY = {"video": (128, 7, 17, 30), "audio_steps": 51, "text_tokens": 256}  # 960x544x49
TINY_GEOMETRY = {"video": (128, 3, 4, 6), "audio_steps": 9, "text_tokens": 16}
_COMPILED = ("Torch-Compiled Region", "CompiledFunction", "## Call CompiledFxGraph")
_SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero")
_CUDA_SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
_LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
_DEQUANTIZE = "comfy_kitchen::dequantize_fp8"
_LABEL = "ops:"  # record_function ranges this script puts around the parts of a step (``label_parts``)


@dataclass
class StepCounts:
    """What one profiled step dispatched (means over the profiled steps)."""

    aten: float = 0
    aten_outside_compiled: float = 0
    launches: float = 0
    copies: float = 0
    syncs: Counter = field(default_factory=Counter)
    dequantize_calls: float = 0
    compiled_calls: float = 0
    graph_breaks: int = 0
    new_graphs: int = 0
    seconds: float = 0.0
    parts: Counter = field(default_factory=Counter)  # "part [compiled]" -> aten ops
    part_launches: Counter = field(default_factory=Counter)  # "part [compiled]" -> kernel launches (CUDA)
    outside_ops: Counter = field(default_factory=Counter)  # op name -> count, outside compiled regions

    def row(self, name: str) -> str:
        return (f"| {name} | {self.aten:.0f} | {self.aten_outside_compiled:.0f} | {self.launches:.0f} | "
                f"{self.copies:.0f} | {sum(self.syncs.values()):.0f} | {self.dequantize_calls:.0f} | "
                f"{self.compiled_calls:.0f} | {self.graph_breaks} | {self.new_graphs} | {self.seconds:.3f} |")


HEAD = ("| row | aten ops | outside compiled | kernel launches | H<->D copies | syncs | fp8 dequantize calls | "
        "compiled calls | graph breaks | graphs compiled | s/step |\n|---|---|---|---|---|---|---|---|---|---|---|")


def _classify(event) -> tuple[bool, str]:
    """(inside a compiled region, part of the step): the innermost label of this script, optimizer or backward."""
    inside, part, parent = False, None, event.cpu_parent
    while parent is not None:
        name = parent.name
        inside = inside or name.startswith(_COMPILED)
        if part is None:
            if name.startswith(_LABEL):
                part = name[len(_LABEL):]
            elif name.startswith("Optimizer."):
                part = "optimizer"
            elif name.startswith("autograd::engine::evaluate_function"):
                part = "backward"
        parent = parent.cpu_parent
    return inside, part or "other (loss, recipe, clipping, ...)"


def count_events(events, steps: int) -> StepCounts:
    """Per-step counts from a profiler's events over ``steps`` steps."""
    c = StepCounts()
    for e in events:
        name = e.name
        if name.startswith("aten::") or name in _LAUNCHES:
            inside, part = _classify(e)
            part += " [compiled]" if inside else ""
            if name in _LAUNCHES:
                c.launches += 1
                c.part_launches[part] += 1
                continue
            c.aten += 1
            c.parts[part] += 1
            if not inside:
                c.aten_outside_compiled += 1
                c.outside_ops[name] += 1
            if name in _SYNC_OPS:
                c.syncs[name] += 1
        elif name in _CUDA_SYNCS:
            c.syncs[name] += 1
        elif name.startswith(("Memcpy HtoD", "Memcpy DtoH")):
            c.copies += 1
        elif name == _DEQUANTIZE:
            c.dequantize_calls += 1
        elif name.startswith("Torch-Compiled Region"):
            c.compiled_calls += 1
    for key in ("aten", "aten_outside_compiled", "launches", "copies", "dequantize_calls", "compiled_calls"):
        setattr(c, key, getattr(c, key) / steps)
    for key in ("syncs", "parts", "part_launches", "outside_ops"):
        setattr(c, key, Counter({k: v / steps for k, v in getattr(c, key).items()}))
    return c


def label_parts(trainer) -> None:
    """Profiler labels around the backbone's forward, the LoRA master copies and (ComfyUI) the model's own steps."""
    from torch.autograd.profiler import record_function

    def wrap(obj, attr: str, label: str) -> None:
        fn = getattr(obj, attr)

        def labelled(*args, **kwargs):
            with record_function(_LABEL + label):
                return fn(*args, **kwargs)

        setattr(obj, attr, labelled)

    wrap(trainer.backbone, "velocity", "forward, rest")
    wrap(trainer.adapters, "grads_to_masters", "lora master copies")
    wrap(trainer.adapters, "refresh_work", "lora master copies")
    dm = getattr(trainer.backbone, "_dm", None)
    if dm is not None:
        for attr in ("_process_input", "_prepare_timestep", "_prepare_context", "_prepare_positional_embeddings",
                     "_process_output"):
            wrap(dm, attr, "forward " + attr.lstrip("_"))
        wrap(dm, "_process_transformer_blocks", "forward blocks")


def _dynamo_totals() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]


# -- models ---------------------------------------------------------------------------------------------------------
def load_comfy_model(path: Path, dtype: str):
    """ComfyUI's checkpoint loader on ``path`` under inference mode, as Load Checkpoint runs it; an fp8 file loads
    the layers a card with fp8 compute (Ada, Hopper) gets."""
    import comfy.model_management as mm
    import comfy.sd

    previous = mm.SUPPORT_FP8_OPS
    mm.SUPPORT_FP8_OPS = dtype == "fp8" or previous
    try:
        with torch.inference_mode():
            return comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=False)[0]
    finally:
        mm.SUPPORT_FP8_OPS = previous


def _config(out: str, steps: int, compile_blocks: str):
    from trainer_core.config.training import TrainConfig

    return TrainConfig.model_validate({
        "output_dir": out,
        "name": "ops",
        "lora": {"rank": 32, "alpha": 32, "targets": "all_attention"},
        "optimization": {"steps": steps},
        "checkpoints": {"every": 10**9},
        "memory": {"gradient_checkpointing": True, "mixed_precision": "bf16", "compile_blocks": compile_blocks},
    })


def build_trainer(backbone: str, path: Path, args, data, out: str, steps: int, device: torch.device,
                  patchers: dict[Path, object]):
    """The Train node's trainer on ComfyUI's MODEL (``comfy``, loaded once per file into ``patchers``: training
    leaves it as it was), or the headless one on ltx-core (``ltxcore``)."""
    from trainer_core.engine.trainer import Trainer

    if backbone == "ltxcore":
        from trainer_core.ltxcore.backbone import LtxCoreBackbone

        model = LtxCoreBackbone.from_checkpoint(path, dtype=torch.bfloat16, device=device)
        return Trainer(model, data, _config(out, steps, "off"))

    from trainer_core.comfy import ComfyBackbone
    from trainer_core.comfy.blocks import compiled_block_forward
    from trainer_core.comfy.training import reserve_training_memory

    torch._dynamo.reset()  # each row counts its own compiles
    compiled_block_forward.cache_clear()
    if path not in patchers:
        patchers[path] = load_comfy_model(path, args.dtype)
    patcher = patchers[path]
    blocks = len(patcher.model.diffusion_model.transformer_blocks)
    # --streamed: every block through the pack's streamer and kept on the device, as under dynamic VRAM.
    model = ComfyBackbone(patcher, streamed_blocks=range(blocks) if args.streamed else None,
                          resident_bytes=1 << 50 if args.streamed else None)
    trainer = Trainer(model, data, _config(out, steps, args.compile))
    reserve_training_memory(model, trainer)
    return trainer


# -- measuring ------------------------------------------------------------------------------------------------------
def measure(trainer, warmup: int, steps: int, timed: int, device: torch.device) -> StepCounts:
    """Train ``warmup + steps + timed`` steps; profile ``steps`` after the warm-up, then time ``timed`` unprofiled
    (s/step: their median; without ``timed``, the profiled steps' mean)."""
    from torch.profiler import ProfilerActivity, profile

    from trainer_core.engine.trainer import Callbacks

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    state: dict = {"times": []}

    def on_step(info) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if info.step == warmup:
            state["dynamo"] = _dynamo_totals()
            state["prof"] = profile(activities=acts)
            state["prof"].start()
            state["t0"] = time.perf_counter()
        elif info.step == warmup + steps:
            state["seconds"] = (time.perf_counter() - state["t0"]) / steps
            state["prof"].stop()
            state["after"] = _dynamo_totals()
        elif info.step > warmup + steps:
            state["times"].append(info.seconds)

    label_parts(trainer)
    trainer.train(Callbacks(on_step=on_step))
    counts = count_events(state["prof"].events(), steps)
    (b0, g0), (b1, g1) = state["dynamo"], state["after"]
    counts.graph_breaks, counts.new_graphs = b1 - b0, g1 - g0
    counts.seconds = statistics.median(state["times"]) if state["times"] else state["seconds"]
    return counts


def _print_parts(results: list[tuple[str, StepCounts]], launches: bool) -> None:
    names = sorted({p for _, c in results for p in (c.part_launches if launches else c.parts)})
    print(f"\n{'kernel launches' if launches else 'aten ops'} per part of the step\n")
    print("| part | " + " | ".join(n for n, _ in results) + " |\n|---|" + "---|" * len(results))
    for part in names:
        cells = [f"{(c.part_launches if launches else c.parts).get(part, 0):.0f}" for _, c in results]
        print(f"| {part} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model and geometry (CPU)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", choices=("fp8", "bf16"), default="fp8",
                   help="checkpoint file layout for the comfy backbone (Lightricks' scaled fp8, or bf16)")
    p.add_argument("--backbones", nargs="+", choices=("comfy", "ltxcore"), default=["comfy"])
    p.add_argument("--modes", nargs="+", choices=("av", "video"), default=["av", "video"])
    p.add_argument("--layers", type=int, default=None, help="transformer blocks (default: 48 full size, 2 tiny)")
    p.add_argument("--streamed", action="store_true",
                   help="every block through the pack's streamer, kept on the device, as under dynamic VRAM (aimdo "
                        "itself is not started: ComfyUI is imported as a library)")
    p.add_argument("--compile", choices=("on", "off"), default="on", help="compile the comfy backbone's blocks")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=1, help="profiled steps")
    p.add_argument("--time-steps", type=int, default=0, help="unprofiled steps timed after the profiled ones")
    p.add_argument("--top", type=int, default=15, help="list the N most frequent ops outside compiled regions")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    boot_comfyui(default_comfyui(), cpu=device.type == "cpu")
    if device.type == "cpu":
        # ComfyUI's CPU attention asks psutil for free memory, which torch.compile cannot trace (GPUs take PyTorch's).
        import comfy.ldm.modules.attention as attention

        attention.optimized_attention = attention.attention_pytorch
    import real_path_files

    config = model_config(full=not args.tiny)
    if args.layers:
        config["transformer"]["num_layers"] = args.layers
    geo = TINY_GEOMETRY if args.tiny else FULL_GEOMETRY
    text_width = config["transformer"]["cross_attention_dim"] + config["transformer"]["audio_cross_attention_dim"]
    results: list[tuple[str, StepCounts]] = []
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, Path] = {}
        patchers: dict[Path, object] = {}
        for backbone in args.backbones:
            dtype = args.dtype if backbone == "comfy" else "bf16"  # ltx-core reads the bf16 layout
            if dtype not in files:
                files[dtype] = Path(tmp) / f"model_{dtype}.safetensors"
                real_path_files.write_checkpoint(files[dtype], config, dtype, device)
            for mode in args.modes:
                data = training_data(geo["video"], geo["audio_steps"] if mode == "av" else 0, geo["text_tokens"],
                                     text_width)
                total = args.warmup + args.steps + args.time_steps
                trainer = build_trainer(backbone, files[dtype], args, data, tmp, total, device, patchers)
                counts = measure(trainer, args.warmup, args.steps, args.time_steps, device)
                name = f"{backbone} {dtype} {mode}"
                results.append((name, counts))
                print(f"\n{name}: syncs {dict(counts.syncs)}; most frequent ops outside compiled regions:")
                for op, n in counts.outside_ops.most_common(args.top):
                    print(f"  {n:8.1f}  {op}")
                del trainer
    _print_parts(results, launches=False)
    if device.type == "cuda":
        _print_parts(results, launches=True)
    print(f"\nper training step, {device.type}{', tiny' if args.tiny else ''}, {config['transformer']['num_layers']} "
          f"blocks{', streamed' if args.streamed else ''}\n\n{HEAD}")
    for name, counts in results:
        print(counts.row(name))


if __name__ == "__main__":
    main()
