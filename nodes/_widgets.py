"""Node widgets generated from the config schema, so node, YAML and docs cannot drift.

``field_widget`` is the one place a schema field becomes a V3 widget input (default, bounds, choices, tooltip and
the field's ``ui`` hints); ``section_inputs`` applies it to a config section's fields and ``section_from_inputs``
validates the widget values back into the section. Optional numbers are shown as 0 and optional strings as ""
meaning "not set". Sockets (MODEL, CLIP, IMAGE, the pack's own types) are not fields and stay on the nodes.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from comfy_api.latest import io
from pydantic.fields import FieldInfo

from ..trainer_core.config import Section, parse_section
from ..trainer_core.config.base import is_widget, widget_hints

CATEGORY = "LTX LoRA Trainer"
FLOAT_STEP = 1e-6  # fine enough for learning rates; a field's ui "step" overrides it


def category(sub: str) -> str:
    """The pack's category root with one of its fixed subcategories."""
    return f"{CATEGORY}/{sub}"


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _bounds(field: FieldInfo) -> dict[str, float]:
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


def field_widget(name: str, field: FieldInfo, owner: str = "") -> io.Input:
    """The V3 widget input of one schema field: the only function that turns a field into a widget.

    Type gives the widget (``Literal`` = combo, bool, int, float, str/Path); default, bounds and description
    (the tooltip) come from the field; its ``ui`` hints (``config.base.WIDGET_HINTS``) add optional, multiline,
    step, or choices listed from a ComfyUI model folder. A required field's widget has no default.
    """
    ann, _ = _unwrap_optional(field.annotation)
    hints = widget_hints(field)
    default = None if field.is_required() else field.default
    common: dict[str, Any] = {"tooltip": field.description or name, "optional": hints.get("optional", False)}
    if "choices_from" in hints:
        import folder_paths  # ComfyUI's; listed each time the node is shown, so new files appear

        return io.Combo.Input(name, options=folder_paths.get_filename_list(hints["choices_from"]), **common)
    if get_origin(ann) is Literal:
        return io.Combo.Input(name, options=list(get_args(ann)), default=default, **common)
    if ann is bool:
        return io.Boolean.Input(name, default=default, **common)
    if ann is int:
        # The frontend puts a "control after generate" on seeds; a training seed must not randomize itself.
        control = {"control_after_generate": io.ControlAfterGenerate.fixed} if name == "seed" else {}
        value = 0 if default is None else default
        return io.Int.Input(name, default=value, **common, **control, **_bounds(field))
    if ann is float:
        value = 0.0 if default is None else default
        step = hints.get("step", FLOAT_STEP)
        return io.Float.Input(name, default=value, step=step, **common, **_bounds(field))
    if ann in (str, Path):
        value = "" if default is None else str(default)
        return io.String.Input(name, default=value, multiline=hints.get("multiline", False), **common)
    raise TypeError(f"{owner or 'config'}.{name}: no widget for type {field.annotation!r}")


def _widget_fields(section: type[Section], exclude: tuple[str, ...]) -> list[tuple[str, FieldInfo]]:
    return [
        (name, f)
        for name, f in section.model_fields.items()
        if name not in exclude
        and is_widget(f)
        and not (isinstance(f.annotation, type) and issubclass(f.annotation, Section))  # nested: own node
    ]


def section_inputs(
    section: type[Section], exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None
) -> list[io.Input]:
    """V3 widget inputs for the widget fields of ``section`` (``only`` these, except ``exclude``), in field order.

    ``only`` lets a node place sockets between a section's widgets, keeping the input order saved workflows use.
    """
    if only is not None and set(only) - set(section.model_fields):
        raise KeyError(f"{section.__name__} has no field {sorted(set(only) - set(section.model_fields))}")
    fields = _widget_fields(section, exclude)
    return [field_widget(name, f, section.__name__) for name, f in fields if only is None or name in only]


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
