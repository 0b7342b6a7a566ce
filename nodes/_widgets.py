"""Node widgets generated from the config schema, so node, YAML and docs cannot drift.

``section_inputs`` turns a config section's fields into V3 widget inputs (defaults, bounds, choices and tooltips
come from the schema); ``section_from_inputs`` validates the widget values back into the section. Optional
numbers are shown as 0 and optional strings as "" meaning "not set".
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from comfy_api.latest import io

from ..trainer_core.config import Section, parse_section

CATEGORY = "LTX LoRA Trainer"


def category(sub: str) -> str:
    """The pack's category root with one of its fixed subcategories."""
    return f"{CATEGORY}/{sub}"


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _bounds(field: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            out["min"] = m.ge
        elif isinstance(m, annotated_types.Gt):
            out["min"] = m.gt
        elif isinstance(m, annotated_types.Le):
            out["max"] = m.le
        elif isinstance(m, annotated_types.Lt):
            out["max"] = m.lt
    return out


def _widget_fields(section: type[Section], exclude: tuple[str, ...]) -> list[tuple[str, Any]]:
    return [
        (name, f)
        for name, f in section.model_fields.items()
        if name not in exclude
        and (f.json_schema_extra or {}).get("widget", True)
        and not (isinstance(f.annotation, type) and issubclass(f.annotation, Section))  # nested: own node
    ]


def section_inputs(section: type[Section], exclude: tuple[str, ...] = ()) -> list[io.Input]:
    """V3 widget inputs for every widget field of ``section``."""
    inputs: list[io.Input] = []
    for name, f in _widget_fields(section, exclude):
        ann, _ = _unwrap_optional(f.annotation)
        default = f.default
        tip = f.description or name
        if get_origin(ann) is Literal:
            inputs.append(io.Combo.Input(name, options=list(get_args(ann)), default=default, tooltip=tip))
        elif ann is bool:
            inputs.append(io.Boolean.Input(name, default=default, tooltip=tip))
        elif ann is int:
            # The frontend puts a "control after generate" on seeds; a training seed must not randomize itself.
            control = {"control_after_generate": io.ControlAfterGenerate.fixed} if name == "seed" else {}
            value = 0 if default is None else default
            inputs.append(io.Int.Input(name, default=value, tooltip=tip, **control, **_bounds(f)))
        elif ann is float:
            b = _bounds(f)
            inputs.append(
                io.Float.Input(name, default=0.0 if default is None else default, tooltip=tip, step=1e-6, **b)
            )
        elif ann in (str, Path):
            inputs.append(io.String.Input(name, default="" if default is None else str(default), tooltip=tip))
        else:
            raise TypeError(f"{section.__name__}.{name}: no widget for type {f.annotation!r}")
    return inputs


def section_from_inputs(section: type[Section], values: dict[str, Any], **overrides: Any):
    """Validate widget values (plus ``overrides``) into ``section``; unset optionals become None."""
    data: dict[str, Any] = {}
    for name, f in section.model_fields.items():
        if name not in values:
            continue
        value = values[name]
        _, optional = _unwrap_optional(f.annotation)
        if optional and value in (0, 0.0, ""):
            value = None
        data[name] = value
    data.update(overrides)
    return parse_section(section, data, where=f"{section.__name__}.")
