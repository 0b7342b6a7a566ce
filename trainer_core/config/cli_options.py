"""Command-line options generated from a config section, so every field is settable and help = tooltip.

``add_section_arguments(parser, Section)`` adds ``--field-name`` per field (choices from ``Literal``, booleans as
``--x/--no-x``); options left out stay unset and the section's own default applies. ``section_from_args``
validates what was given into the section (``ConfigError`` names the bad field).
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal, get_args, get_origin

from .base import Section, parse_section


def _base_type(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def add_section_arguments(
    parser: argparse.ArgumentParser,
    section: type[Section],
    *,
    exclude: tuple[str, ...] = (),
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """Add one option per field of ``section`` (except ``exclude``); ``aliases`` adds extra flags per field."""
    aliases = aliases or {}
    for name, f in section.model_fields.items():
        if name in exclude:
            continue
        ann = _base_type(f.annotation)
        flags = [f"--{name.replace('_', '-')}", *aliases.get(name, [])]
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": f"{f.description} (default: {f.default!r})"}
        if get_origin(ann) is Literal:
            kwargs["choices"] = list(get_args(ann))
        elif ann is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif ann in (int, float):
            kwargs["type"] = ann
        else:
            kwargs["type"] = str
        parser.add_argument(*flags, **kwargs)


def section_from_args(section: type[Section], args: argparse.Namespace, **overrides: Any) -> Section:
    """The section built from the options that were given (plus ``overrides``), validated."""
    data = {n: getattr(args, n) for n in section.model_fields if getattr(args, n, None) is not None}
    data.update(overrides)
    return parse_section(section, data, where="option ")
