"""``python -m trainer_core config``: check a training config, or translate an ltx-trainer / tutorial one.

``config check CONFIG`` validates a config of this trainer, ltx-trainer v1.x or the LTX-2 LoRA tutorial and prints
what each foreign key became (``trainer_core.config.foreign.RULES``). ``config translate IN OUT`` writes the native
YAML, headed by that mapping, so the result can be read and edited before training.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

HELP = "check a training config (also ltx-trainer's and the LTX-2 LoRA tutorial's) or translate one to this trainer's"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="validate CONFIG and print how each ltx-trainer / tutorial key maps")
    check.add_argument("config", help="YAML config of this trainer, ltx-trainer v1.x or the LTX-2 LoRA tutorial")
    tr = sub.add_parser("translate", help="write CONFIG as this trainer's YAML, headed by the mapping used")
    tr.add_argument("src", metavar="IN", help="YAML config to read")
    tr.add_argument("dst", metavar="OUT", help="YAML file to write")
    tr.add_argument("--force", action="store_true", help="replace OUT if it exists")


def _check(args: argparse.Namespace) -> int:
    from ..config.foreign import load_train_config
    from ..config.training import CHECKPOINT_UNSET, DATA_UNSET

    translation = load_train_config(args.config)
    cfg = translation.config
    lines = [translation.report(args.config), f"{args.config}: valid"]
    # Not errors here (the Train node gets both over sockets), but `train` needs them.
    lines += [f"note: {DATA_UNSET}"] * (not cfg.data) + [f"note: {CHECKPOINT_UNSET}"] * (not cfg.model.checkpoint)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _translate(args: argparse.Namespace) -> int:
    from ..atomic import write_atomic
    from ..config import ConfigError
    from ..config.foreign import load_train_config
    from ..config.training import train_config_yaml

    dst = Path(args.dst)
    if dst.exists() and not args.force:
        raise ConfigError(f"{dst} exists; choose another OUT or pass --force to replace it")
    translation = load_train_config(args.src)
    header = textwrap.indent(translation.report(args.src), "# ", lambda _: True)
    write_atomic(dst, header + "\n" + train_config_yaml(translation.config))
    sys.stdout.write(f"{translation.report(args.src)}\nWrote {dst}\n")
    return 0


def run(args: argparse.Namespace) -> int:
    return _check(args) if args.action == "check" else _translate(args)
