"""Command-line entry point: one sub-command per module in ``trainer_core.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``, and keeps
its heavy imports inside ``run`` so ``--help`` stays fast.

Exit status: what the command returns (0 success, 1 where it reports failed items), 2 for an error the user can
fix (bad config, cache or LoRA file, missing file, full disk), printed as one ``error:`` line without a traceback,
130 on Ctrl-C. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from .errors import UserError

COMMANDS = ("dataset", "train", "demo", "lora", "cache", "config", "sweep")


def build_parser() -> argparse.ArgumentParser:
    # The `ltx-lora` console script names itself; `python -m trainer_core` runs as __main__.py, which would not.
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    prog = "python -m trainer_core" if prog in ("", "__main__.py", "-c") else prog
    parser = argparse.ArgumentParser(prog=prog, description="LTX-2.3 LoRA trainer (headless).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"{__package__}.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def user_error(err: BaseException) -> str | None:
    """The one-line message of an error the user can fix, or None for a bug (which keeps its traceback).

    Every ``UserError`` is one; so is an ``OSError`` the system raised on a file the user named (or a full disk).
    """
    if isinstance(err, UserError):
        return str(err)
    # Imported here, not at the top: atomic imports PIL, and `--help` should not wait for it.
    from .atomic import disk_write_error

    if isinstance(err, OSError) and err.filename is not None:  # a file or folder the user named, or a full disk
        translated = disk_write_error(err, Path(err.filename))
        return translated.strerror if translated is not None else f"{err.strerror}: {err.filename}"
    if isinstance(err, FileNotFoundError):  # raised with a message of our own, e.g. "checkpoint not found: ..."
        return str(err)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)  # noqa: T201 - CLI output
        return 130
    except (UserError, OSError) as err:
        message = user_error(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
