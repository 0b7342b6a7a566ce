"""``python -m trainer_core lora``: inspect LoRA files and convert them between key layouts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config.cli_options import add_section_arguments, section_from_args
from ..config.lorafile import ConvertLoraSettings

HELP = "inspect a LoRA file (family, ranks, targets) or convert it between ComfyUI / PEFT / diffusers / kohya layouts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..lorafile.layouts import LAYOUTS

    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ins = sub.add_parser("inspect", help="report a LoRA's family, layout, ranks, alpha and targeted modules")
    ins.add_argument("file", help="LoRA .safetensors file")
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.add_argument("--model", help="single-file LTX checkpoint: also report which LoRA layers it would skip")
    conv = sub.add_parser("convert", help="write the LoRA in another key layout (the source is never modified)")
    conv.add_argument("src", metavar="IN", help="LoRA .safetensors file to read")
    conv.add_argument("dst", metavar="OUT", nargs="?",
                      help="file to write (default: IN_<layout>.safetensors next to IN, e.g. NAME_comfy.safetensors)")
    conv.add_argument("--to", default="comfy", choices=LAYOUTS,
                      help="target layout (default: comfy = ComfyUI and this pack)")
    # --fold-alpha, --dtype and --overwrite (alias --force), as the Convert node's widgets (peft/diffusers always
    # fold alpha)
    add_section_arguments(
        conv, ConvertLoraSettings, exclude=("source", "output_name"), aliases={"overwrite": ["--force"]}
    )


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _inspect(args: argparse.Namespace) -> int:
    from ..lorafile.inspect import inspect_file, report_json, report_text
    from ..lorafile.match import checkpoint_weight_shapes

    report, match = inspect_file(args.file, checkpoint_weight_shapes(args.model) if args.model else None)
    _out(report_json(report, match) if args.json else report_text(report, match))
    usable = not report.nonfinite and (match is None or match.ok)
    return 0 if args.json or usable else 1  # the JSON carries the verdict itself


def _convert(args: argparse.Namespace) -> int:
    from ..lorafile.layouts import convert_file, converted_name
    from ..lorafile.read import LoraFileError

    opts = section_from_args(ConvertLoraSettings, args)
    dst = Path(args.dst) if args.dst else Path(args.src).with_name(converted_name(args.src, args.to))
    if dst.exists() and not opts.overwrite:
        raise LoraFileError(f"{dst} already exists; give another OUT or pass --force to replace it")
    path, parsed = convert_file(args.src, dst, args.to, fold_alpha=opts.fold_alpha, dtype=opts.dtype)
    _out(f"Wrote {path}: {len(parsed.modules)} modules, {parsed.layout} -> {args.to}")
    return 0


def run(args: argparse.Namespace) -> int:
    return _inspect(args) if args.action == "inspect" else _convert(args)
