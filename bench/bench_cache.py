"""Benchmark: latent-cache encoding rate (items/s) and the training loader's read throughput (GB/s).

1. Encoding: generated 64x64 H.264 clips (17 frames) cached with ltx-core's tiny VAE (random weights, the real
   LTX-2.3 VAE topology at a few channels) and the stand-in text encoder, on the CPU: measures the cache
   machinery (decode, encode, hash, atomic safetensors writes, manifest) rather than a real VAE's compute.
2. Writing and reading real-size items: ``--items`` items with a 768x448x49 latent ``[128, 7, 14, 24]`` and a
   200-token LTX-2.3 text feature ``[1, 200, 6144]`` (float32, as ComfyUI returns them) written by
   ``build_cache`` through synthetic encoders, then read back with ``CachedData[i]`` (what the Train node does
   each step) for ``--epochs`` passes; GB/s counts the file bytes read. Files are in the OS page cache after
   writing (warm reads), as they are for a dataset smaller than RAM.

    .venv/bin/python bench/bench_cache.py [--clips 12] [--items 64] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dataset_media import write_video
from trainer_core.cache import CachedData, build_cache
from trainer_core.ltxcore.encoders import LtxCoreVae
from trainer_core.cache.standin_text import StandinTextEncoder, text_width_for
from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset import load_dataset
from trainer_core.ltxcore.model import read_checkpoint_config
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

LATENT = (128, 7, 14, 24)  # 768x448x49
TEXT = (1, 200, 6144)


class SyntheticVideo:
    family = "ltx-2.x-video-vae"

    def identity(self) -> str:
        return "synthetic"

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.randn(LATENT)


class SyntheticText:
    family, width = "ltx-2.3-gemma", TEXT[-1]

    def identity(self) -> str:
        return "synthetic"

    def encode(self, caption: str) -> torch.Tensor:
        return torch.randn(TEXT)


class FakeItem(SimpleNamespace):
    """A dataset item whose frames are free, so the write/read side is measured alone."""

    reference_key = None  # no IC-LoRA reference

    def load_frames(self) -> torch.Tensor:
        return torch.zeros(49, 448, 768, 3)


def bench_encode(tmp: Path, clips: int) -> dict:
    ds_root = tmp / "clips"
    ds_root.mkdir()
    for i in range(clips):
        write_video(ds_root / f"c{i:03d}.mp4", frames=20 + i, size=(96 + 8 * i, 64))
        (ds_root / f"c{i:03d}.txt").write_text(f"clip {i}, a grey square")
    ckpt = write_tiny_checkpoint(tmp / "tiny.safetensors")
    vae = LtxCoreVae(ckpt, decoder=False)
    text = StandinTextEncoder(text_width_for(read_checkpoint_config(ckpt)))
    items = load_dataset(DatasetConfig(path=str(ds_root), buckets="64x64x17")).items
    start = time.perf_counter()
    build_cache(items, tmp / "enc", vae, text)
    first = time.perf_counter() - start
    start = time.perf_counter()
    build_cache(items, tmp / "enc", vae, text)
    rerun = time.perf_counter() - start
    return {"items": len(items), "encode_s": first, "rerun_s": rerun}


def bench_io(tmp: Path, n: int, epochs: int) -> dict:
    src = tmp / "src.bin"
    src.write_bytes(b"x")
    st = src.stat()
    items = [
        FakeItem(
            id=f"item{i:04d}",
            source=src,
            source_size=st.st_size,
            source_mtime_ns=st.st_mtime_ns,
            caption=f"caption {i}",
            fps=25.0,
            plan=SimpleNamespace(as_dict=lambda i=i: {"n": i}),
        )
        for i in range(n)
    ]
    start = time.perf_counter()
    build_cache(items, tmp / "io", SyntheticVideo(), SyntheticText())
    write_s = time.perf_counter() - start
    data = CachedData(tmp / "io")
    per_item = sum(r.latent_bytes + r.text_bytes for r in data.records) / len(data)
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(len(data)):
            s = data[i]
            s.video.sum()  # touch the bytes
    read_s = time.perf_counter() - start
    return {
        "items": n,
        "mb_per_item": per_item / 1e6,
        "write_s": write_s,
        "read_gbs": per_item * n * epochs / read_s / 1e9,
        "read_items_s": n * epochs / read_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        enc = bench_encode(Path(tmp), args.clips)
        io = bench_io(Path(tmp), args.items, args.epochs)
    sys.stdout.write(
        f"encode (tiny VAE, CPU): {enc['items']} clips in {enc['encode_s']:.2f} s = "
        f"{enc['items'] / enc['encode_s']:.1f} items/s; unchanged re-run {enc['rerun_s']:.3f} s\n"
        f"write real-size items: {io['items']} x {io['mb_per_item']:.2f} MB in {io['write_s']:.2f} s = "
        f"{io['items'] / io['write_s']:.1f} items/s, {io['items'] * io['mb_per_item'] / 1e3 / io['write_s']:.2f} GB/s\n"
        f"read (CachedData[i], warm): {io['read_gbs']:.2f} GB/s = {io['read_items_s']:.0f} items/s\n"
    )


if __name__ == "__main__":
    main()
