"""Inside a real ComfyUI: every node of the pack is registered, every input has a tooltip, and every widget that
comes from a config section shows that section's default, choices and bounds (house style: no drift)."""

from __future__ import annotations

import sys
import types
import typing
from typing import Literal, get_args, get_origin

import annotated_types
import pytest


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


def _inputs(node_cls) -> dict[str, tuple]:
    spec = node_cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def _widget_fields(section) -> dict:
    return {n: f for n, f in section.model_fields.items() if (f.json_schema_extra or {}).get("widget", True)}


def _expected(field) -> dict:
    ann = field.annotation
    if get_origin(ann) in (typing.Union, types.UnionType):
        ann = next(a for a in get_args(ann) if a is not type(None))
    default = field.default
    if default is None:
        default = {int: 0, float: 0.0, bool: False}.get(ann, "")
    out = {"default": default if not hasattr(default, "__fspath__") else str(default)}
    if get_origin(ann) is Literal:
        out["options"] = list(get_args(ann))
    for m in field.metadata:
        if isinstance(m, (annotated_types.Ge, annotated_types.Gt)):
            out["min"] = getattr(m, "ge", getattr(m, "gt", None))
        if isinstance(m, (annotated_types.Le, annotated_types.Lt)):
            out["max"] = getattr(m, "le", getattr(m, "lt", None))
    return out


def test_every_pack_node_is_registered_in_comfyui(comfy):
    import nodes

    assert comfy.NODE_CLASS_MAPPINGS, "the pack registers no nodes"
    for node_id, cls in comfy.NODE_CLASS_MAPPINGS.items():
        assert nodes.NODE_CLASS_MAPPINGS.get(node_id) is cls, f"{node_id} is not in ComfyUI's NODE_CLASS_MAPPINGS"
        assert node_id.startswith("LtxLora")
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_id) == comfy.NODE_DISPLAY_NAME_MAPPINGS[node_id]
    for node_id in ("LtxLoraLoadDataset", "LtxLoraTrimFrames", "LtxLoraDatasetPreview"):
        assert node_id in nodes.NODE_CLASS_MAPPINGS


def test_every_input_has_a_tooltip(comfy):
    for node_id, cls in comfy.NODE_CLASS_MAPPINGS.items():
        for name, (_, opts) in _inputs(cls).items():
            assert (opts or {}).get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_widgets_match_the_config_schema(comfy):
    base = sys.modules[f"{comfy.__name__}.trainer_core.config.base"]
    sections = [s for s in _all_subclasses(base.Section) if _widget_fields(s)]
    checked = 0
    for node_id, cls in comfy.NODE_CLASS_MAPPINGS.items():
        inputs = _inputs(cls)
        for section in sections:
            fields = _widget_fields(section)
            if not set(fields) <= set(inputs):
                continue  # this node does not embed this section
            for name, field in fields.items():
                io_type, opts = inputs[name]
                assert io_type in WIDGET_TYPES, f"{node_id}.{name}: {io_type} is not a widget"
                for key, want in _expected(field).items():
                    assert opts.get(key) == want, f"{node_id}.{name} {key}: widget {opts.get(key)!r} != schema {want!r}"
                assert opts["tooltip"] == field.description
                checked += 1
    assert checked >= 12  # at least DatasetConfig (8), TrimFramesConfig (1) and ContactSheetConfig (3)


def test_own_socket_types_are_defined_once_and_link_two_nodes(comfy):
    """Every socket type of the pack's own (not one of ComfyUI's) is one of those defined in ``nodes/_sockets.py``,
    and each is output by one node and taken by another: a type name spelt differently in one node would leave
    a socket that nothing can link to."""
    from comfy_api.latest import io

    sockets = sys.modules[f"{comfy.__name__}.nodes._sockets"]
    comfy_types = {getattr(v, "io_type", None) for v in vars(io).values() if isinstance(v, type)}
    taken, given = set(), set()
    for cls in comfy.NODE_CLASS_MAPPINGS.values():
        taken |= {t for t, _ in _inputs(cls).values() if isinstance(t, str)} - comfy_types
        given |= set(cls.RETURN_TYPES) - comfy_types
    defined = {s.io_type for s in sockets.ALL}
    assert len(defined) == len(sockets.ALL)
    assert taken == given == defined


def test_web_folder_is_served_once(comfy):
    """ComfyUI serves ``web/`` under every name it is registered with (``WEB_DIRECTORY``, pyproject's
    ``[tool.comfy] web``); twice means every extension loads twice and the second fails to register."""
    from pathlib import Path

    import nodes

    web = (Path(__file__).resolve().parents[2] / "web").resolve()
    names = [name for name, path in nodes.EXTENSION_WEB_DIRS.items() if Path(path).resolve() == web]
    assert len(names) == 1, f"web/ is served as {names}"
