"""``python -m trainer_core dataset PATH``: load a dataset and print its report (text, or JSON with --json).

Every ``DatasetConfig`` field is an option (``--buckets``, ``--trigger``, ``--target-fps``/``--fps``, ``--crop``,
``--trim-start``, ``--seed``, ``--caption-token-budget``). Exit status 0 when at least one item is usable,
1 when none is.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..config.cli_options import add_section_arguments, section_from_args
from ..config.dataset import DatasetConfig

HELP = "Check a dataset (folder or manifest): bucket, trim and caption report, without decoding whole videos."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``dataset`` command (generated from ``DatasetConfig``)."""
    parser.add_argument("path", help=DatasetConfig.model_fields["path"].description)
    add_section_arguments(parser, DatasetConfig, exclude=("path",), aliases={"target_fps": ["--fps"]})
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")


def run(args: argparse.Namespace) -> int:
    """Load the dataset and write the report to stdout."""
    from ..dataset import build_report, load_dataset, report_text

    cfg = section_from_args(DatasetConfig, args, path=args.path)
    ds = load_dataset(cfg)
    text = json.dumps(build_report(ds), indent=2, ensure_ascii=False) if args.json else report_text(ds)
    sys.stdout.write(text + "\n")
    return 0 if ds.items else 1
