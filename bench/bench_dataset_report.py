"""Benchmark: building the dataset report for many clips, and proof that it does not decode whole videos.

Generates ``--clips`` short H.264 clips (PyAV) with sidecar captions in a temporary folder, times
``load_dataset`` + ``build_report`` + ``report_text``, and counts the frames probing decoded
(``MediaInfo.decoded_frames``) against the frames the clips hold. For comparison it then decodes every frame of
every clip once, which is what counting frames by decoding would cost.

    .venv/bin/python bench/bench_dataset_report.py [--clips 100] [--frames 121] [--size 640x360]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset import build_report, load_dataset, report_text


def write_clip(path: Path, frames: int, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(base, i * 3, axis=1), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def decode_everything(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        with av.open(str(p)) as c:
            total += sum(1 for _ in c.decode(video=0))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--frames", type=int, default=121, help="frames per clip (25 fps)")
    parser.add_argument("--size", default="640x360")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = []
        for i in range(args.clips):
            path = root / f"clip_{i:03d}.mp4"
            write_clip(path, args.frames - (i % 4) * 8, width, height, i)
            (root / f"clip_{i:03d}.txt").write_text(f"a woman with brown hair, take {i}", encoding="utf-8")
            paths.append(path)
        print(f"generated {args.clips} clips of {args.size} in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        ds = load_dataset(DatasetConfig(path=str(root), trigger="sks"))
        build_report(ds)
        text = report_text(ds)
        report_s = time.perf_counter() - t0
        decoded = sum(i.info.decoded_frames for i in ds.items)
        held = sum(i.info.frames for i in ds.items)
        print(text.splitlines()[1])
        print(f"report: {report_s:.2f} s for {args.clips} clips = {args.clips / report_s:.1f} clips/s")
        per_clip = decoded / len(ds.items)
        print(f"frames decoded while probing: {decoded} of {held} in the clips ({per_clip:.1f} per clip)")

        t0 = time.perf_counter()
        full = decode_everything(paths)
        full_s = time.perf_counter() - t0
        print(f"for comparison, decoding all {full} frames once: {full_s:.2f} s = {args.clips / full_s:.1f} clips/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
