"""Full-size LTX-2.3 LoRA training speed and memory: our trainer on ComfyUI's model vs Lightricks' recipe.

In one process: measure the bf16 matmul rate; build ComfyUI's LTX-2.3 22B model with random bf16 weights on the
GPU (meta -> device, every parameter initialised), wrap it in a ModelPatcher and train our LoRA through
``Trainer`` + ``ComfyBackbone`` (rank 32, all_attention, per-block checkpointing, bf16 autocast) at
960x544x49 with audio and video-only; then the reference recipe (ltx-core + PEFT + live connectors, see
``gpu_reference``) on the same shapes; then optional variants (fp8 base weights, a 24 GiB memory cap with
ComfyUI's weight streaming, a profiler breakdown). Prints a markdown table last.

    python bench/bench_train_gpu.py                 # on a GPU, full size
    python bench/bench_train_gpu.py --tiny          # same code on the CPU with trainer_core.ltxcore.tiny sizes

Times are medians over steps after warm-up, with a device sync after each step. Peak VRAM is
``max_memory_allocated`` (reserved in brackets), reset before each configuration; peak RSS is sampled.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from gpu_measure import (  # noqa: E402
    GIB,
    TABLE_HEAD,
    ForwardFlops,
    Result,
    RssPeak,
    StepTimer,
    count_forward,
    host_to_device_gbps,
    lora_forward_flops,
    matmul_tflops,
    peak_gib,
    reset_peak,
    training_flops,
)
from gpu_models import (  # noqa: E402
    boot_comfyui,
    build_comfy_patcher,
    build_ltx_core,
    default_comfyui,
    model_config,
    training_data,
)

log = logging.getLogger("bench_train_gpu")

# 960x544x49: latent [128, 7, 17, 30] (3,570 tokens), audio [8, 51, 16]; 256 real caption tokens.
FULL_GEOMETRY = {"video": (128, 7, 17, 30), "audio_steps": 51, "text_tokens": 256}
TINY_GEOMETRY = {"video": (128, 3, 4, 6), "audio_steps": 9, "text_tokens": 16}
RANK = 32


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        import comfy.model_management as mm

        mm.unload_all_models()
        mm.soft_empty_cache()
        torch.cuda.empty_cache()


def _summarise(
    name: str,
    timer: StepTimer,
    warmup: int,
    device: torch.device,
    rss: RssPeak,
    tokens: int,
    tflop: float,
    note: str = "",
) -> Result:
    timed = timer.times[warmup:] or [float("nan")]
    peak, reserved = peak_gib(device)
    res = Result(
        name,
        timer.median(warmup),
        (min(timed), max(timed)),
        peak,
        reserved,
        rss.peak / GIB,
        tokens,
        tflop,
        timer.losses[-1] if timer.losses else float("nan"),
        note,
    )
    log.info("%s: %s", name, res)
    return res


# -- ours --------------------------------------------------------------------------------------------------------
def train_ours(
    patcher, data, steps: int, device: torch.device, profile_last: bool = False, compile_blocks: str = "auto",
) -> tuple[StepTimer, object, object]:
    """``steps`` optimizer steps of our Trainer on ComfyUI's model; returns the timer, trainer and profile."""
    from trainer_core.engine.trainer import Callbacks

    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(patcher, data, out, steps, compile_blocks=compile_blocks)
        timer = StepTimer(device)
        prof = {"p": None}

        def on_step(info) -> None:
            timer.step(info.loss)
            if profile_last and info.step == steps - 1:
                prof["p"] = _start_profiler(device)
            elif prof["p"] is not None and info.step == steps:
                prof["p"].stop()

        timer.start()
        trainer.train(Callbacks(on_step=on_step))
    return timer, trainer, prof["p"]


def _trainer(patcher, data, out: str, steps: int, compile_blocks: str = "auto", preview: dict | None = None):
    """Our Trainer on ComfyUI's MODEL as the Train node builds it (memory reserve included): rank 32, all
    attentions, checkpointing, bf16; checkpoints only at the end."""
    from trainer_core.comfy import ComfyBackbone
    from trainer_core.comfy.training import reserve_training_memory
    from trainer_core.config.training import TrainConfig
    from trainer_core.engine.trainer import Trainer

    cfg = TrainConfig.model_validate(
        {
            "output_dir": out,
            "name": "bench",
            "lora": {"rank": RANK, "alpha": RANK, "targets": "all_attention"},
            "optimization": {"steps": steps},
            "checkpoints": {"every": 10**9},
            "memory": {"gradient_checkpointing": True, "mixed_precision": "bf16", "compile_blocks": compile_blocks},
            "preview": preview or {},
        }
    )
    backbone = ComfyBackbone(patcher)
    trainer = Trainer(backbone, data, cfg)
    reserve_training_memory(backbone, trainer)
    return trainer


def _start_profiler(device: torch.device):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    p = profile(activities=acts)
    p.start()
    return p


def our_flops(patcher, data, trainer, audio: bool) -> tuple[ForwardFlops, float, float]:
    """Counted forward FLOPs of our training forward (no LoRA), LoRA FLOPs and the connectors' forward FLOPs."""
    from trainer_core.comfy import ComfyBackbone
    from trainer_core.lora.targets import select_targets

    backbone = ComfyBackbone(patcher)
    sample = data[0]
    text_flops = count_forward(lambda: backbone.prepare_text(sample.text)).total
    text = backbone.prepare_text(sample.text)
    inp, _ = trainer.recipe.prepare(
        sample.video[None].to(backbone.device),
        sample.audio[None].to(backbone.device) if audio else None,
        text,
        25.0,
        torch.Generator().manual_seed(0),
    )
    with backbone.training_session(), torch.no_grad(), torch.autocast(backbone.device.type, torch.bfloat16):
        fwd = count_forward(lambda: backbone.velocity(inp))
    targets = select_targets(backbone.lora_targets(), "all_attention")
    from trainer_core.backbone import linear_dims

    names = sorted(targets)
    f, h, w = sample.video.shape[1:]
    tokens = {"video": f * h * w, "audio": sample.audio.shape[1] if audio else 0, "text": text.video.shape[1]}
    lora = lora_forward_flops([linear_dims(targets[n]) for n in names], tokens, names, RANK)
    return fwd, lora, text_flops


def build_model(config, device, weight_dtype: torch.dtype):
    """ComfyUI's model with random weights, loaded by ComfyUI (see ``_load_like_comfyui``); reused by sections."""
    t0 = time.perf_counter()
    patcher = build_comfy_patcher(config, device, weight_dtype, seed=0)
    patcher.load_note = _load_like_comfyui(patcher, device)
    log.info(
        "ComfyUI model (%s) built in %.1f s (%.2fB parameters)", weight_dtype, time.perf_counter() - t0,
        sum(p.numel() for p in patcher.model.diffusion_model.parameters()) / 1e9,
    )
    return patcher


def bench_ours(args, config, geometry, device, results: list[Result], flops: dict, patcher) -> None:
    load_note = patcher.load_note
    runs = [(True, "auto", "")] + ([] if args.av_only else [(False, "auto", "")])
    runs += [(audio, "off", "") for audio in (True, False) if args.eager]
    runs += [(True, "auto", option) for option in args.inductor_option]
    for audio, compile_blocks, option in runs:
        name = ("ours AV" if audio else "ours video-only") + (" eager" if compile_blocks == "off" else "")
        name += f" +{option}" if option else ""
        data = training_data(
            geometry["video"], geometry["audio_steps"] if audio else 0, geometry["text_tokens"], _text_width(config)
        )
        reset_peak(device)
        profile = args.profile and compile_blocks == "auto" and not option
        steps = args.warmup + args.steps + (1 if profile else 0)
        with RssPeak() as rss, _inductor_option(option):
            timer, trainer, prof = train_ours(
                patcher, data, steps, device, profile_last=profile, compile_blocks=compile_blocks
            )
        if trainer.compiled_blocks:
            from torch._dynamo.utils import counters

            print(f"{name}: torch.compile graphs {counters['stats']['unique_graphs']}, "
                  f"graph breaks {dict(counters['graph_break'])}", flush=True)
        if prof is not None:
            _profile_table(prof, args.out / f"profile_{'av' if audio else 'video'}.txt", timer.times.pop())
        tokens = _tokens(geometry, audio)
        if compile_blocks == "auto":
            fwd, lora, text_fwd = our_flops(patcher, data, trainer, audio)
            flops[name] = {
                "linear": fwd.linear,
                "attention": fwd.attention,
                "other": fwd.other,
                "lora": lora,
                "connectors": text_fwd,
            }
        counted = flops["ours AV" if audio else "ours video-only"]
        fwd = ForwardFlops(counted["linear"], counted["attention"], counted["other"])
        res = _summarise(
            name,
            timer,
            args.warmup,
            device,
            rss,
            tokens,
            training_flops(fwd, counted["lora"]) / 1e12,
            f"{'compiled' if trainer.compiled_blocks else 'eager'} blocks, first step {timer.times[0]:.0f} s; "
            f"{len(trainer.adapters.names)} LoRA layers; {load_note}",
        )
        results.append(res)
        del trainer
        gc.collect()


@contextmanager
def _inductor_option(option: str) -> Iterator[None]:
    """Compile the blocks afresh with the boolean inductor setting ``option`` on (nothing when empty)."""
    if not option:
        yield
        return
    import torch._dynamo
    import torch._inductor.config

    from trainer_core.comfy.blocks import compiled_block_forward

    torch._dynamo.reset()
    compiled_block_forward.cache_clear()
    with torch._inductor.config.patch({option: True}):
        yield
    torch._dynamo.reset()
    compiled_block_forward.cache_clear()


def bench_fp8(args, config, geometry, device, results: list[Result], patcher) -> None:
    load_note = patcher.load_note
    data = training_data(geometry["video"], geometry["audio_steps"], geometry["text_tokens"], _text_width(config))
    reset_peak(device)
    with RssPeak() as rss:
        timer, _, _ = train_ours(patcher, data, args.warmup + max(3, args.steps // 2), device)
    results.append(
        _summarise(
            "ours AV fp8 weights",
            timer,
            args.warmup,
            device,
            rss,
            _tokens(geometry, True),
            _av_tflop(results),
            f"e4m3fn storage, bf16 compute; {load_note}",
        )
    )


@contextmanager
def _memory_cap(patcher, device: torch.device, cap_gib: float | None) -> Iterator[None]:
    """Run as on a card of ``cap_gib`` (None: no cap): the model goes back to the host first, so that the next
    load keeps only what fits; ComfyUI and the torch allocator both see the cap."""
    import comfy.model_management as mm

    if cap_gib is None:
        yield
        return
    total = torch.cuda.get_device_properties(device).total_memory
    previous = mm.EXTRA_RESERVED_VRAM
    with torch.inference_mode():  # every weight back on ComfyUI's offload device, as before a fresh load
        mm.unload_all_models()
    torch.cuda.empty_cache()
    mm.EXTRA_RESERVED_VRAM = int(total - cap_gib * GIB)  # ComfyUI sizes its loads from this, not the torch cap
    torch.cuda.set_per_process_memory_fraction(cap_gib * GIB / total, _index(device))
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, _index(device))
        mm.EXTRA_RESERVED_VRAM = previous


def bench_capped(args, config, geometry, device, results: list[Result], patcher, cap_gib: float) -> None:
    """Our AV run on ``patcher`` under a per-process memory cap, as on a smaller card: ComfyUI keeps what fits
    beside the Train node's memory estimate, our block streamer brings in the rest."""
    fp8 = patcher.model.diffusion_model.transformer_blocks[0].attn1.to_q.weight.dtype.itemsize == 1
    data = training_data(geometry["video"], geometry["audio_steps"], geometry["text_tokens"], _text_width(config))
    with _memory_cap(patcher, device, cap_gib):
        reset_peak(device)
        with RssPeak() as rss:
            steps = 1 + args.capped_steps + (1 if args.profile else 0)
            timer, trainer, prof = train_ours(patcher, data, steps, device, profile_last=args.profile)
    if prof is not None:
        _profile_table(prof, args.out / f"profile_av_{cap_gib:g}gib.txt", timer.times.pop())
    streamed = trainer.backbone.streamed_bytes / steps
    results.append(
        _summarise(
            f"ours AV{', fp8 weights' if fp8 else ''}, {cap_gib:g} GiB cap",
            timer,
            1,
            device,
            rss,
            _tokens(geometry, True),
            _av_tflop(results),
            f"{patcher.loaded_size() / GIB:.1f} GiB weights kept on GPU, "
            f"{trainer.backbone.memory_required / GIB:.1f} GiB reserved for training, "
            f"{streamed / GIB:.1f} GiB streamed per step (pinned H2D {args.h2d_gbps:.1f} GB/s); "
            f"{'compiled' if trainer.compiled_blocks else 'eager'} blocks",
        )
    )


def bench_stream_grads(args, config, geometry, device, patcher, cap_gib: float) -> None:
    """One AV step's LoRA gradients with every weight resident (twice: the GPU's own run-to-run noise) and under
    ``cap_gib`` with the streamer: streaming must move them no more than that noise."""
    data = training_data(geometry["video"], geometry["audio_steps"], geometry["text_tokens"], _text_width(config))
    grads = []
    for cap in (None, None, cap_gib):
        with _memory_cap(patcher, device, cap), tempfile.TemporaryDirectory() as out:
            trainer = _trainer(patcher, data, out, steps=1)  # same seed: same LoRA init, noise and sigma
            trainer.backbone.set_gradient_checkpointing(True)
            trainer.backbone.set_compiled_blocks(device.type == "cuda")
            with trainer.backbone.training_session(), trainer.adapters.attached():
                loss, _ = trainer._batch_loss([0])
                loss.backward()
            trainer.adapters.grads_to_masters()
            grads.append(torch.cat([p.grad.double().flatten() for p in trainer.adapters.masters()]).cpu())
            streamed = trainer.backbone.streamed_bytes
            del trainer
    noise = ((grads[1] - grads[0]).norm() / grads[0].norm()).item()
    error = ((grads[2] - grads[0]).norm() / grads[0].norm()).item()
    cosine = torch.nn.functional.cosine_similarity(grads[2], grads[0], dim=0).item()
    print(f"streamed gradients ({cap_gib:g} GiB cap, {streamed / GIB:.1f} GiB streamed): relative difference "
          f"{error:.2e} (cosine {cosine:.6f}) vs resident; resident vs resident {noise:.2e}", flush=True)


# -- reference ---------------------------------------------------------------------------------------------------
def bench_previews(args, config, geometry, device, results: list[Result]) -> None:
    """AV training with and without in-training previews every 2 steps: does sampling fit where training fits?

    Same model, data and seed, three runs: no previews twice (the run-to-run noise of GPU kernels, e.g. flash
    attention's atomic backward) and previews every 2 steps. Prints peak VRAM, wall time and the loss sequences.
    """
    from trainer_core.comfy.previews import attach_previews
    from trainer_core.engine.trainer import Callbacks

    patcher = build_comfy_patcher(config, device, torch.bfloat16, seed=0)
    note = _load_like_comfyui(patcher, device)
    data = training_data(geometry["video"], geometry["audio_steps"], geometry["text_tokens"], _text_width(config))
    size = 64 if args.tiny else 256
    runs = {}
    for label, every in (("off", 0), ("off again", 0), ("every 2", 2)):
        reset_peak(device)
        with tempfile.TemporaryDirectory() as out:
            preview = {"every": every, "width": size, "height": size, "frames": 9, "steps": 8}
            trainer = _trainer(patcher, data, out, 4, preview=preview)
            cfg = trainer.cfg
            callbacks = Callbacks()
            runner = attach_previews(callbacks, trainer, patcher, data, cfg) if every else None
            t0 = time.perf_counter()
            result = trainer.train(callbacks)
            seconds = time.perf_counter() - t0
            if runner is not None:
                (args.out / "previews").mkdir(exist_ok=True)
                for png in runner.saved:  # the preview stills come back with the run's output
                    (args.out / "previews" / png.name).write_bytes(png.read_bytes())
        peak, reserved = peak_gib(device)
        runs[label] = result.losses
        print(
            f"previews {label}: 4 steps in {seconds:.1f} s, previews {seconds - sum(trainer.run.seconds):.1f} s"
            f" (step times {[round(t, 2) for t in trainer.run.seconds]}),"
            f" peak {peak:.1f} GiB ({reserved:.1f}), previews {len(runner.saved) if runner else 0}, "
            f"losses {result.losses}; {'compiled' if trainer.compiled_blocks else 'eager'} blocks; {note}",
            flush=True,
        )
        del trainer
        gc.collect()
    noise = max(abs(a - b) for a, b in zip(runs["off"], runs["off again"], strict=True))
    change = max(abs(a - b) for a, b in zip(runs["off"], runs["every 2"], strict=True))
    print(f"previews: loss difference {change:.3g} vs run-to-run {noise:.3g} without previews; "
          f"bit-identical: {runs['off'] == runs['every 2']}", flush=True)
    del patcher
    _free(device)


def bench_reference(args, config, geometry, device, results: list[Result], flops: dict) -> None:
    from gpu_reference import ReferenceRecipe

    t0 = time.perf_counter()
    model = build_ltx_core(config, device, seed=0)
    log.info("ltx-core model built in %.1f s", time.perf_counter() - t0)
    ref = ReferenceRecipe(model, RANK)
    for audio in (True, False):
        name = "reference AV" if audio else "reference video-only"
        data = training_data(
            geometry["video"], geometry["audio_steps"] if audio else 0, geometry["text_tokens"], _text_width(config)
        )
        sample = data[0]
        timer = StepTimer(device)
        reset_peak(device)
        with RssPeak() as rss:
            ref.run(args.ref_warmup + args.ref_steps, sample.video, sample.audio, sample.text.to(device), timer)
        ours = flops.get("ours AV" if audio else "ours video-only")
        tflop = float("nan")
        if ours:
            fwd = ForwardFlops(ours["linear"], ours["attention"], ours["other"])
            tflop = training_flops(fwd, ours["lora"], ours["connectors"]) / 1e12
        results.append(
            _summarise(
                name,
                timer,
                args.ref_warmup,
                device,
                rss,
                _tokens(geometry, audio),
                tflop,
                f"{ref.num_lora_layers} PEFT layers",
            )
        )
    del ref, model
    _free(device)


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _load_like_comfyui(patcher, device: torch.device) -> str:
    """Put the weights on the host and let ComfyUI load them, as after its checkpoint loader.

    Built straight on the GPU, ComfyUI's bookkeeping would count the weights as foreign memory and load the model
    only partially (seen: 1.8 GB streamed per pass). Returns what ComfyUI kept on the device.
    """
    import comfy.model_management as mm

    if device.type != "cuda":
        return "cpu"
    # Under inference mode, as ComfyUI's executor runs loaders: moving inference-mode weights outside it leaves
    # Parameters that fail in forward ("Inference tensors do not track version counter", device run 2).
    with torch.inference_mode():
        patcher.model.to(mm.unet_offload_device())
        torch.cuda.empty_cache()
        mm.load_models_gpu([patcher])
    loaded, size = patcher.loaded_size(), patcher.model_size()
    return f"{loaded / GIB:.1f} of {size / GIB:.1f} GiB weights on GPU"


# -- helpers -----------------------------------------------------------------------------------------------------
def _text_width(config) -> int:
    t = config["transformer"]
    return t["cross_attention_dim"] + t["audio_cross_attention_dim"]


def _av_tflop(results: list[Result]) -> float:
    """TFLOP per step counted for the resident "ours AV" row: the same work for its fp8 and capped variants."""
    return next((r.tflop for r in results if r.name == "ours AV"), float("nan"))


def _tokens(geometry, audio: bool) -> int:
    _, f, h, w = geometry["video"]
    return f * h * w + (geometry["audio_steps"] if audio else 0)


def _profile_table(prof, path: Path, wall: float) -> None:
    """Kernel time by category (attention, GEMM, copy/cast, elementwise, optimizer) and the top kernels, against
    the profiled step's wall time ``wall`` (kernels of the copy stream overlap the others, so the sum may exceed it)."""
    cats: dict[str, float] = {}
    launches = 0
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0)
        if not t or e.device_type.name != "CUDA":
            continue
        launches += e.count
        cat = _category(e.key)
        cats[cat] = cats.get(cat, 0.0) + t / 1e6
        rows.append((t / 1e6, e.count, cat, e.key[:90]))
    rows.sort(reverse=True)
    lines = [f"{path.stem}: kernel launches {launches}, GPU kernel time {sum(cats.values()):.3f} s in a "
             f"{wall:.3f} s step"]
    lines += [f"  {k:12s} {v:.3f} s" for k, v in sorted(cats.items(), key=lambda kv: -kv[1])]
    lines += ["top kernels (s, count, category, name):"] + [f"  {t:.4f} {c:6d} {k:11s} {n}" for t, c, k, n in rows[:25]]
    text = "\n".join(lines)
    path.write_text(text + "\n\n" + prof.key_averages().table(sort_by="self_device_time_total", row_limit=40))
    print(text)


def _category(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("flash", "fmha", "attention", "cudnn", "sdpa")):
        return "attention"
    if any(k in n for k in ("gemm", "nvjet", "cutlass", "xmma", "gemv", "matmul", "cublas")):
        return "gemm"
    if any(k in n for k in ("adam", "multi_tensor", "foreach")):
        return "optimizer"
    if any(k in n for k in ("copy", "cast", "convert")):
        return "copy/cast"
    if "memset" in n or "memcpy" in n:
        return "memcpy"
    return "elementwise"


def _section(name: str, deadline: float, fn, *a) -> None:
    if time.perf_counter() > deadline:
        print(f"SKIPPED {name}: past the time budget", flush=True)
        return
    t0 = time.perf_counter()
    try:
        fn(*a)
    except Exception:  # noqa: BLE001 - one failed section must not lose the others' numbers
        print(f"FAILED {name}:\n{traceback.format_exc()}", flush=True)
    print(f"section {name}: {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model on the CPU (debugging)")
    p.add_argument("--comfyui", type=Path, default=None, help="ComfyUI tree (default: .gpu/comfyui or ~/.cache)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--ref-warmup", type=int, default=2)
    p.add_argument("--ref-steps", type=int, default=5)
    p.add_argument("--capped-steps", type=int, default=3)
    p.add_argument("--cap-gib", type=float, nargs="*", default=[24.0, 32.0], help="memory caps for streaming runs")
    p.add_argument("--cap-fp8", type=float, nargs="*", default=[], help="memory caps for fp8-weight streaming runs")
    p.add_argument("--stream-grads", type=float, default=24.0, metavar="GIB",
                   help="compare one step's LoRA gradients resident vs under this cap (0: skip)")
    p.add_argument("--no-fp8", action="store_true")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--profile", action="store_true", help="profile one extra step of our compiled and capped rows")
    p.add_argument("--eager", action="store_true", help="also time our blocks uncompiled")
    p.add_argument("--inductor-option", nargs="*", default=[], help="extra ours-AV rows compiled with this "
                   "boolean torch._inductor.config setting on (e.g. cpp_wrapper)")
    p.add_argument("--previews", action="store_true", help="add the with/without in-training previews check")
    p.add_argument("--no-ours", action="store_true", help="skip our bf16 rows (e.g. with --previews alone)")
    p.add_argument("--av-only", action="store_true", help="our bf16 rows: audio+video only")
    p.add_argument("--budget-s", type=float, default=480, help="skip optional sections after this many seconds")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / "out" / "bench")))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    deadline = time.perf_counter() + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)

    device = torch.device("cpu" if args.tiny else "cuda")
    boot_comfyui(args.comfyui or default_comfyui(), cpu=args.tiny)
    config = model_config(full=not args.tiny)
    geometry = TINY_GEOMETRY if args.tiny else FULL_GEOMETRY
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    rate = matmul_tflops(device, 8192 if device.type == "cuda" else 512, 20 if device.type == "cuda" else 3)
    args.h2d_gbps = host_to_device_gbps(device) if device.type == "cuda" else 0.0
    print(f"{env}; bf16 matmul {rate:.1f} TFLOP/s; pinned host-to-device {args.h2d_gbps:.1f} GB/s", flush=True)

    results: list[Result] = []
    flops: dict = {}
    cuda = device.type == "cuda"
    # Each model is built once and serves its resident rows, then its memory caps (the compiled graphs carry over).
    if not args.no_ours or ((args.cap_gib or args.stream_grads) and cuda):
        patcher = build_model(config, device, torch.bfloat16)
        if not args.no_ours:
            _section("ours bf16", float("inf"), bench_ours, args, config, geometry, device, results, flops, patcher)
        for cap in args.cap_gib if cuda else []:
            _section(f"cap {cap:g}", deadline, bench_capped, args, config, geometry, device, results, patcher, cap)
        if args.stream_grads and cuda:
            _section("streamed gradients", deadline, bench_stream_grads, args, config, geometry, device, patcher,
                     args.stream_grads)
        del patcher
        _free(device)
    if not args.no_reference:
        _section("reference", float("inf"), bench_reference, args, config, geometry, device, results, flops)
    if not args.no_fp8 or (args.cap_fp8 and cuda):
        patcher = build_model(config, device, torch.float8_e4m3fn)
        if not args.no_fp8:
            _section("fp8", deadline, bench_fp8, args, config, geometry, device, results, patcher)
        for cap in args.cap_fp8 if cuda else []:
            _section(f"cap {cap:g} fp8", deadline, bench_capped, args, config, geometry, device, results, patcher, cap)
        del patcher
        _free(device)
    if args.previews:
        _section("previews", float("inf"), bench_previews, args, config, geometry, device, results)

    (args.out / "results.json").write_text(
        json.dumps(
            {"env": env, "matmul_tflops": rate, "flops": flops, "results": [r.__dict__ for r in results]},
            indent=1,
            default=str,
        )
    )
    print(
        f"\n{env['device']}, torch {env['torch']}, bf16 matmul 8192^3: {rate:.1f} TFLOP/s; "
        f"960x544x49 = {_tokens(geometry, True)} tokens AV"
        if not args.tiny
        else "\ntiny (CPU)"
    )
    print(TABLE_HEAD)
    for r in results:
        print(r.row(rate))
    by = {r.name: r for r in results}
    for kind in ("AV", "video-only"):
        ours, ref = by.get(f"ours {kind}"), by.get(f"reference {kind}")
        if ours and ref:
            print(
                f"ours/reference {kind}: time {ours.s_per_step / ref.s_per_step:.2f}x, "
                f"peak VRAM {ours.peak_gib - ref.peak_gib:+.1f} GiB"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
