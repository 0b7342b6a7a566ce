"""Multi-GPU LoRA training: s/step, throughput and peak memory per GPU for 1, 2, 4 ... processes, ddp and fsdp.

Each configuration runs in its own processes: one process for 1 GPU (the baseline), ``torchrun --standalone
--nproc_per_node N`` for N > 1. Every process loads the model as the train command does
(``trainer_core.commands.train.load_backbone``, bf16): ddp reads the whole model onto its GPU, fsdp splits the
transformer over the processes first (``ShardedDataParallel``) and each process reads only its own rows of the file.
The file is ``--checkpoint`` (LTX-2.3's own) or, without it, one written first with random bf16 weights of the full
22B sizes (``gpu_models.write_ltx_core_checkpoint``: about 44 GB of disk, and twice that of host memory while it is
written; random weights run exactly the kernels and shapes of real ones). Each process then trains our LoRA through
``Trainer`` (rank 32, all_attention, per-block checkpointing, bf16 autocast) with batch 1 per process on N clips of
one shape, so the global batch is N. Times are the medians of ``StepInfo.seconds`` after the warm-up steps (each
step ends in a host sync of the summed loss). Peak memory is ``max_memory_allocated`` (reserved in brackets) per
process, reset after the model is loaded, the worst process shown.

    python bench/bench_multi_gpu.py --gpus 1,2,4 --strategies ddp,fsdp            # 960x544x49, audio + video
    python bench/bench_multi_gpu.py --gpus 2,4 --strategies fsdp --frames 121     # FSDP2 memory per GPU
    python bench/bench_multi_gpu.py --tiny --gpus 1,2 --strategies ddp,fsdp       # tiny model, CPU, gloo
    python bench/bench_multi_gpu.py --checkpoint ltx-2.3-22b-dev.safetensors      # the real weights

The audio latent length is frames / 25 fps x 25 latents per second + 2 (51 at 49 frames, as bench_train_gpu).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

GIB = 2**30
RANK = 32
# NVLink multicast stays off on shared hosts (it can take the GPUs out of service), also in the children.
_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def geometry(args: argparse.Namespace) -> dict:
    """Latent shapes of one clip: video [128, F, H, W], audio steps, caption tokens."""
    if args.tiny:
        return {"video": (128, 3, 4, 6), "audio_steps": 9 if args.audio else 0, "text_tokens": 16}
    if (args.frames - 1) % 8 or args.width % 32 or args.height % 32:
        raise SystemExit("--frames must be 8n+1 and --width/--height multiples of 32")
    video = (128, (args.frames - 1) // 8 + 1, args.height // 32, args.width // 32)
    return {"video": video, "audio_steps": args.frames + 2 if args.audio else 0, "text_tokens": 256}


# -- one process of one configuration -------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    import torch

    from trainer_core.commands.train import load_backbone
    from trainer_core.config import parse_section
    from trainer_core.config.training import TrainConfig
    from trainer_core.engine.data import InMemoryData, Sample
    from trainer_core.engine.distributed import (
        DataParallel,
        ShardedDataParallel,
        SingleProcess,
        launched,
        local_rank,
    )
    from trainer_core.engine.trainer import Callbacks, Trainer

    device = torch.device("cpu" if args.tiny else f"cuda:{local_rank()}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    parallel = SingleProcess()
    if launched():
        parallel = (ShardedDataParallel if args.strategy == "fsdp" else DataParallel).start(device.type)
    try:
        t0 = time.perf_counter()
        backbone = load_backbone(args.checkpoint, torch.bfloat16, str(device), parallel)
        config = backbone.model.config
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        held = sum(_local(p).numel() * p.element_size() for p in backbone.transformer.parameters())
        build_s = time.perf_counter() - t0

        geo = geometry(args)
        t_cfg = config["transformer"]
        width = t_cfg["cross_attention_dim"] + t_cfg["audio_cross_attention_dim"]
        g = torch.Generator().manual_seed(0)
        samples = [
            Sample(
                key=f"clip_{i}",
                video=torch.randn(*geo["video"], generator=g),
                text=torch.randn(1, geo["text_tokens"], width, generator=g),
                frame_rate=25.0,
                audio=torch.randn(8, geo["audio_steps"], 16, generator=g) if geo["audio_steps"] else None,
            )
            for i in range(parallel.world_size)
        ]
        data = InMemoryData(samples, empty_text=torch.zeros(1, 0, width))
        steps = args.warmup + args.steps
        with tempfile.TemporaryDirectory() as out:
            cfg = parse_section(TrainConfig, {
                "output_dir": out, "name": "bench", "seed": 0,
                "lora": {"rank": RANK, "alpha": RANK, "targets": "all_attention"},
                "optimization": {"steps": steps, "learning_rate": 1e-4, "batch_size": 1},
                "checkpoints": {"every": steps},
                "memory": {"gradient_checkpointing": True, "mixed_precision": "bf16"},
                "recipe": {"audio": "generate" if geo["audio_steps"] else "off"},
                "distributed": {"strategy": args.strategy},
            })
            seconds: list[float] = []
            losses: list[float] = []

            def on_step(info) -> None:
                seconds.append(info.seconds)
                losses.append(info.loss)

            Trainer(backbone, data, cfg, parallel=parallel).train(Callbacks(on_step=on_step))
        peak = (torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)) \
            if device.type == "cuda" else (float("nan"), float("nan"))
        record = {
            "rank": parallel.rank, "world": parallel.world_size, "strategy": args.strategy, "build_s": build_s,
            "seconds": seconds, "losses": losses, "weights_gib": held / GIB,
            "peak_alloc_gib": peak[0] / GIB, "peak_reserved_gib": peak[1] / GIB,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
        }
        Path(args.record).with_suffix(f".rank{parallel.rank}.json").write_text(json.dumps(record))
    finally:
        parallel.close()


def _local(p):
    return p.to_local() if hasattr(p, "to_local") else p


# -- the driver -----------------------------------------------------------------------------------------------------
def write_checkpoint(args: argparse.Namespace, path: Path) -> str:
    """Random weights of the benchmarked sizes in ``path``, written by a child process: the driver's own process
    keeps no GPU memory while the configurations run."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--write-random", str(path)]
    cmd += ["--tiny"] if args.tiny else []
    subprocess.run(cmd, cwd=REPO, env={**os.environ, **_SAFE_ENV}, check=True)
    return str(path)


def run_config(args: argparse.Namespace, gpus: int, strategy: str, work: Path) -> list[dict] | str:
    """Run one configuration in fresh processes; its per-process records, or the tail of its log on failure."""
    record = work / f"{gpus}_{strategy}"
    flags = ["--worker", "--strategy", strategy, "--record", str(record), "--checkpoint", args.checkpoint,
             "--steps", str(args.steps), "--warmup", str(args.warmup), "--frames", str(args.frames), "--width", str(args.width),
             "--height", str(args.height), "--audio" if args.audio else "--no-audio"] + (["--tiny"] if args.tiny else [])
    script = str(Path(__file__).resolve())
    if gpus == 1:
        cmd = [sys.executable, script, *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus), script,
               *flags]
    env = {**os.environ, **_SAFE_ENV}
    if args.tiny:
        env.setdefault("OMP_NUM_THREADS", "1")
    log = work / f"{gpus}_{strategy}.log"
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=args.timeout,
                                  check=False)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    print(f"{gpus} x {strategy}: exit {code} after {time.perf_counter() - t0:.0f} s", flush=True)
    records = [json.loads(p.read_text()) for p in sorted(work.glob(f"{record.name}.rank*.json"))]
    if code != 0 or len(records) != gpus:
        return "\n".join(log.read_text().splitlines()[-25:])
    return records


def table(rows: list[tuple[int, str, list[dict]]], warmup: int) -> str:
    head = ("| GPUs | strategy | global batch | s/step median (min-max) | clips/s | vs 1 GPU | base weights per GPU GiB "
            "| peak alloc per GPU GiB (reserved) | last loss |\n|---|---|---|---|---|---|---|---|---|")
    lines, base = [head], None
    for gpus, strategy, recs in rows:
        timed = recs[0]["seconds"][warmup:] or recs[0]["seconds"]
        median = statistics.median(timed)
        rate = gpus / median
        base = rate if gpus == 1 and base is None else base
        worst = max(recs, key=lambda r: r["peak_alloc_gib"] if r["peak_alloc_gib"] == r["peak_alloc_gib"] else 0)
        lines.append(
            f"| {gpus} | {strategy} | {gpus} | {median:.3f} ({min(timed):.3f}-{max(timed):.3f}) | {rate:.3f} | "
            f"{'' if base is None else f'{rate / base:.2f}x'} | {max(r['weights_gib'] for r in recs):.3f} | "
            f"{worst['peak_alloc_gib']:.1f} ({worst['peak_reserved_gib']:.1f}) | {recs[0]['losses'][-1]:.4f} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", default="1,2,4", help="comma-separated process counts (1 = one process, the baseline)")
    p.add_argument("--strategies", default="ddp,fsdp", help="ddp, fsdp or both (1 GPU runs once, as 'one')")
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--width", type=int, default=960)
    p.add_argument("--height", type=int, default=544)
    p.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--tiny", action="store_true", help="tiny model on the CPU with gloo (debugging)")
    p.add_argument("--checkpoint", help="an LTX-2.3 single-file checkpoint to train on (default: random weights of "
                   "the full sizes, or the tiny ones with --tiny, written to a temporary file first)")
    p.add_argument("--json", help="also write the per-process records here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--strategy", default="ddp", help=argparse.SUPPRESS)
    p.add_argument("--record", help=argparse.SUPPRESS)
    p.add_argument("--write-random", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.write_random:
        import torch

        from gpu_models import model_config, write_ltx_core_checkpoint

        device = torch.device("cpu" if args.tiny else "cuda:0")
        write_ltx_core_checkpoint(model_config(full=not args.tiny), Path(args.write_random), device, seed=0)
        return 0
    rows, failed = [], []
    geo = geometry(args)
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint is None:
            args.checkpoint = write_checkpoint(args, Path(tmp) / "random.safetensors")
        for gpus in (int(n) for n in args.gpus.split(",")):
            for strategy in (["one"] if gpus == 1 else args.strategies.split(",")):
                got = run_config(args, gpus, "ddp" if strategy == "one" else strategy, Path(tmp))
                if isinstance(got, str):
                    failed.append((gpus, strategy, got))
                else:
                    rows.append((gpus, strategy, got))
    size = "tiny (CPU, gloo)" if args.tiny else f"{args.width}x{args.height}x{args.frames}"
    first = rows[0][2][0] if rows else {}
    print(f"\n{size}, {'audio + video' if geo['audio_steps'] else 'video only'}, latent {geo['video']}, "
          f"rank {RANK}; {first.get('device', '?')}, torch {first.get('torch', '?')}")
    if rows:
        print(table(rows, args.warmup))
    for gpus, strategy, tail in failed:
        print(f"\n{gpus} x {strategy} FAILED; last lines of its log:\n{tail}")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": size, "rows": [
            {"gpus": g, "strategy": s, "records": r} for g, s, r in rows]}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
