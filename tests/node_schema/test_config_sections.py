"""Without ComfyUI: the settings of every node are sections of the one config schema, and the CLI options that
share a node's settings are generated from the same sections (so help, choices and defaults agree)."""

from __future__ import annotations

from typing import get_args

import pytest

from trainer_core.cli import build_parser
from trainer_core.config.base import knob
from trainer_core.config.cache import CacheConfig
from trainer_core.config.cli_options import section_from_args
from trainer_core.config.lorafile import ConvertLoraSettings, LoraDtype


def _sub(parser, *path):
    for name in path:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


def _option(parser, flag):
    return next(a for a in parser._actions if flag in a.option_strings)


def test_convert_dtypes_of_the_schema_are_those_the_converter_knows():
    from trainer_core.lorafile.layouts import DTYPES

    assert list(get_args(LoraDtype)) == list(DTYPES)


def test_cache_cli_tiled_vae_comes_from_the_cache_section():
    parser = build_parser()
    option = _option(_sub(parser, "cache"), "--tiled-vae")
    assert option.help.startswith(CacheConfig.model_fields["tiled_vae"].description)
    args = parser.parse_args(["cache", "clips", "--out", "cache_dir", "--tiled-vae"])
    assert section_from_args(CacheConfig, args, folder=args.out) == CacheConfig(folder="cache_dir", tiled_vae=True)
    args = parser.parse_args(["cache", "clips", "--out", "cache_dir"])
    assert section_from_args(CacheConfig, args, folder=args.out).tiled_vae is False  # the schema's default


def test_lora_convert_cli_options_come_from_the_convert_node_settings():
    parser = build_parser()
    dtype = _option(_sub(parser, "lora", "convert"), "--dtype")
    assert dtype.choices == list(get_args(LoraDtype))
    args = parser.parse_args(["lora", "convert", "a.safetensors", "b.safetensors", "--to", "peft"])
    assert section_from_args(ConvertLoraSettings, args) == ConvertLoraSettings()  # dtype keep, no folding
    args = parser.parse_args(["lora", "convert", "a", "b", "--to", "comfy", "--fold-alpha", "--dtype", "float16"])
    opts = section_from_args(ConvertLoraSettings, args)
    assert (opts.fold_alpha, opts.dtype) == (True, "float16")
    with pytest.raises(SystemExit):
        parser.parse_args(["lora", "convert", "a", "b", "--to", "comfy", "--dtype", "int8"])


def test_an_unknown_widget_hint_is_refused():
    with pytest.raises(TypeError, match="unknown widget hints"):
        knob(1, "A number.", ui={"multi_line": True})
