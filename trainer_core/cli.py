"""Command-line entry point: one sub-command per module in ``trainer_core.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``, and keeps
its heavy imports inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .config import ConfigError

COMMANDS = ("dataset", "train", "demo", "lora", "cache")


def _load(name: str):
    try:
        return importlib.import_module(f"{__package__}.commands.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"{__package__}.commands.{name}":
            return None  # command not built in this version
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer_core", description="LTX-2.3 LoRA trainer (headless).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args._run(args) or 0)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)  # noqa: T201 - CLI output
        return 130
