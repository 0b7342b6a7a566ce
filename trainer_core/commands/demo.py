"""``python -m trainer_core demo --out DIR``: the built-in tiny end-to-end example (no downloads)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Run data -> cache -> train -> save -> reload -> strength sweep on a tiny built-in model (no downloads)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="folder for the dataset, cache, LoRA and images")
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole run")


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    summary = run_demo(Path(args.out), steps=args.steps, seed=args.seed)
    sys.stdout.write(summary.text() + "\n")
    return 0
