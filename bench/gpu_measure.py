"""Measuring helpers for the GPU training benchmark: step timer, peak host RSS, matmul rate, FLOPs, table."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
import torch

GIB = 2**30


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RssPeak:
    """Peak resident set size of this process while the ``with`` block runs (sampled every 20 ms)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak = interval, 0
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssPeak:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


@dataclass
class StepTimer:
    """Wall time per step, taken at a device sync after each step (so asynchronous work is counted)."""

    device: torch.device
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    _last: float | None = None

    def start(self) -> None:
        sync(self.device)
        self._last = time.perf_counter()

    def step(self, loss: float) -> None:
        sync(self.device)
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now
        self.losses.append(loss)

    def median(self, warmup: int) -> float:
        timed = self.times[warmup:]
        return statistics.median(timed) if timed else float("nan")


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """Measured bf16 matmul rate (n^3, random data), the MFU denominator."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def host_to_device_gbps(device: torch.device, gib: float = 1.0, reps: int = 5) -> float:
    """Measured copy rate from pinned host memory to ``device`` (what the block streamer is bound by)."""
    host = torch.empty(int(gib * GIB), dtype=torch.uint8).pin_memory()
    dev = torch.empty_like(host, device=device)
    dev.copy_(host, non_blocking=True)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        dev.copy_(host, non_blocking=True)
    sync(device)
    return host.nbytes * reps / (time.perf_counter() - t0) / 1e9


@dataclass
class ForwardFlops:
    """FLOPs of one forward, by kind (counted with ``torch.utils.flop_counter``)."""

    linear: float = 0.0  # addmm / mm / bmm (frozen base Linears)
    attention: float = 0.0  # scaled-dot-product attention
    other: float = 0.0

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.other


def count_forward(fn: Callable[[], object]) -> ForwardFlops:
    """Count the FLOPs of ``fn()`` by operator kind."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    out = ForwardFlops()
    for op, flops in counter.get_flop_counts()["Global"].items():
        name = str(op)
        if "attention" in name:
            out.attention += flops
        elif name.split(".")[-1].startswith(("addmm", "mm", "bmm", "linear")) or ".mm" in name or "addmm" in name:
            out.linear += flops
        else:
            out.other += flops
    return out


def lora_forward_flops(
    adapter_dims: list[tuple[int, int]], tokens: dict[str, int], names: list[str], rank: int
) -> float:
    """Forward FLOPs of the LoRA branches: 2*T*r*(in+out) per adapted Linear, T its stream's token count."""
    total = 0.0
    for name, (fan_in, fan_out) in zip(names, adapter_dims, strict=True):
        total += 2 * tokens[stream_of(name)] * rank * (fan_in + fan_out)
    return total


def stream_of(name: str) -> str:
    """Which token count a Linear runs on: 'video', 'audio' or 'text' (K/V of the text attentions)."""
    part = name.split(".")[2]
    proj = name.split(".")[3]
    if part in ("attn2", "audio_attn2") and proj in ("to_k", "to_v"):
        return "text"
    if part == "audio_to_video_attn":
        return "audio" if proj in ("to_k", "to_v") else "video"
    if part == "video_to_audio_attn":
        return "video" if proj in ("to_k", "to_v") else "audio"
    return "audio" if part.startswith("audio") else "video"


def training_flops(fwd: ForwardFlops, lora_fwd: float, connector_fwd: float = 0.0) -> float:
    """One LoRA step with per-block checkpointing and a frozen base (the anchor's accounting).

    Linears x3 (forward, recompute, input gradient: frozen weights need no weight gradient), attention x4.5
    (forward, recompute, backward at 2.5x), LoRA x4 (plus its weight gradient), the rest x2; connectors run with
    autograd every step (the reference) cost x3.
    """
    return 3 * fwd.linear + 4.5 * fwd.attention + 2 * fwd.other + 4 * lora_fwd + 3 * connector_fwd


@dataclass
class Result:
    name: str
    s_per_step: float = float("nan")
    min_max: tuple[float, float] = (float("nan"), float("nan"))
    peak_gib: float = float("nan")
    reserved_gib: float = float("nan")
    rss_gib: float = float("nan")
    tokens: int = 0
    tflop: float = float("nan")
    loss: float = float("nan")
    note: str = ""

    def mfu(self, rate_tflops: float) -> float:
        return self.tflop / self.s_per_step / rate_tflops

    def row(self, rate: float) -> str:
        tps = self.tokens / self.s_per_step if self.s_per_step == self.s_per_step else float("nan")
        return (
            f"| {self.name} | {self.s_per_step:.3f} ({self.min_max[0]:.2f}-{self.min_max[1]:.2f}) | "
            f"{self.peak_gib:.1f} ({self.reserved_gib:.1f}) | {self.rss_gib:.1f} | {tps:,.0f} | "
            f"{self.tflop:.1f} | {100 * self.mfu(rate):.1f}% | {self.loss:.3f} | {self.note} |"
        )


TABLE_HEAD = (
    "| config | s/step median (min-max) | peak alloc GiB (reserved) | peak RSS GiB | tokens/s | "
    "TFLOP/step | MFU | last loss | note |\n|---|---|---|---|---|---|---|---|---|"
)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> tuple[float, float]:
    if device.type != "cuda":
        return float("nan"), float("nan")
    return torch.cuda.max_memory_allocated(device) / GIB, torch.cuda.max_memory_reserved(device) / GIB
