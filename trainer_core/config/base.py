"""Schema building blocks shared by every config section.

Each section is a pydantic model with ``extra="forbid"`` so a typo is an error, and every field carries a
description that doubles as the node widget's tooltip and the CLI help. ``ConfigError`` turns pydantic's
errors into one line per field naming the field, the bad value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UserError

S = TypeVar("S", bound="Section")


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message names each offending field."""


class Section(BaseModel):
    """Base of every config section: strict, validated on assignment, no unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# How a field's node widget is presented, beyond what its type, default and bounds say. Read only by the
# nodes' one field-to-widget function (``nodes._widgets.field_widget``).
WIDGET_HINTS = {
    "optional": "the widget may be left out of a saved workflow (ComfyUI's optional inputs)",
    "multiline": "a multi-line text box",
    "step": "increment of a number widget (FLOAT default 1e-6; None = the frontend's own)",
    "choices_from": "a ComfyUI model folder (e.g. 'loras') whose file names are the choices, listed when the node "
    "is shown",
}


def knob(default: Any, description: str, *, widget: bool = True, ui: dict[str, Any] | None = None,
         **constraints: Any) -> Any:
    """A config field. ``description`` is the tooltip; ``widget=False`` keeps it out of node widgets.

    ``default=...`` makes the field required. ``ui`` holds presentation hints for the node widget (keys in
    ``WIDGET_HINTS``); they do not change what the schema accepts.
    """
    unknown = set(ui or {}) - set(WIDGET_HINTS)
    if unknown:
        raise TypeError(f"unknown widget hints {sorted(unknown)}; known: {sorted(WIDGET_HINTS)}")
    extra: dict[str, Any] = {"widget": widget}
    if ui:
        extra["ui"] = dict(ui)
    return Field(default=default, description=description, json_schema_extra=extra, **constraints)


def widget_hints(field: Any) -> dict[str, Any]:
    """The ``ui`` hints a field was declared with (empty when none)."""
    return dict((field.json_schema_extra or {}).get("ui", {}))


def is_widget(field: Any) -> bool:
    """Whether a field is shown as a node widget (``knob(..., widget=False)`` fields are not)."""
    return bool((field.json_schema_extra or {}).get("widget", True))


def _format_errors(cls: type[BaseModel], err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # a check across fields: its message names them
            lines.append(f"{where}{msg}")
            continue
        field = ".".join(str(p) for p in e["loc"])
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        lines.append(f"{where}{field} = {shown}: {msg}")
    return f"Invalid {cls.__name__} settings:\n  " + "\n  ".join(lines)


def parse_section(cls: type[S], data: dict[str, Any] | None, where: str = "") -> S:
    """Validate ``data`` into ``cls``; raise ``ConfigError`` naming every bad field."""
    try:
        return cls.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(cls, err, where)) from None


def read_mapping(path: str | Path) -> dict[str, Any] | None:
    """A YAML file's top-level mapping (None when empty); ``ConfigError`` names the file when it is unusable."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file: give the path of the YAML file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); save it with the UTF-8 encoding "
            "(in most editors: Save As, encoding UTF-8)"
        ) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings at the top level, not {type(data).__name__}")
    return data


def load_yaml(cls: type[S], path: str | Path) -> S:
    """Read a YAML file into a validated section; errors name the file and the field."""
    return parse_section(cls, read_mapping(path), where=f"{Path(path).name}: ")


def dump_yaml(section: Section) -> str:
    """The fully resolved settings as YAML; loading it back gives an equal section."""
    return yaml.safe_dump(section.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
