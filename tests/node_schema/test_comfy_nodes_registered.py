"""Inside a real ComfyUI: every node of the pack is registered, every input has a tooltip, and every widget of
every node is a config schema field showing that field's default, choices, bounds and tooltip, made by the one
field-to-widget function (house style: no drift)."""

from __future__ import annotations

import sys
import types
import typing
from typing import Literal, get_args, get_origin

import annotated_types


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UNSET = object()


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


def _inputs(node_cls) -> dict[str, tuple]:
    spec = node_cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def _widgets(node_cls) -> dict[str, tuple[str, dict, bool]]:
    """``name: (io_type, options, optional)`` of every widget input (sockets and forced inputs left out)."""
    spec = node_cls.INPUT_TYPES()
    out = {}
    for group in ("required", "optional"):
        for name, (io_type, *rest) in spec.get(group, {}).items():
            opts = rest[0] if rest else {}
            if (io_type in WIDGET_TYPES or isinstance(io_type, list)) and not opts.get("forceInput"):
                out[name] = (io_type, opts, group == "optional")
    return out


def _widget_fields(section) -> dict:
    """Fields shown as widgets: all but ``widget=False`` ones and nested sections (those have their own node)."""
    return {
        n: f
        for n, f in section.model_fields.items()
        if (f.json_schema_extra or {}).get("widget", True) and not hasattr(f.annotation, "model_fields")
    }


def _sections(comfy) -> list[type]:
    base = sys.modules[f"{comfy.__name__}.trainer_core.config.base"]
    return [s for s in _all_subclasses(base.Section) if _widget_fields(s)]


def _expected(field) -> dict:
    """What the node widget of ``field`` must show, worked out here from the field alone (the test's oracle)."""
    ann = field.annotation
    if get_origin(ann) in (typing.Union, types.UnionType):
        ann = next(a for a in get_args(ann) if a is not type(None))
    hints = (field.json_schema_extra or {}).get("ui", {})
    out: dict = {"tooltip": field.description}
    if "choices_from" in hints:
        import folder_paths

        out["options"] = folder_paths.get_filename_list(hints["choices_from"])
        out["default"] = UNSET  # ComfyUI shows the first file
    elif field.is_required():
        out["default"] = UNSET
    else:
        default = field.default
        if default is None:
            default = {int: 0, float: 0.0, bool: False}.get(ann, "")
        out["default"] = default if not hasattr(default, "__fspath__") else str(default)
    if get_origin(ann) is Literal:
        out["options"] = list(get_args(ann))
    out["min"] = out["max"] = UNSET
    for m in field.metadata:
        if isinstance(m, (annotated_types.Ge, annotated_types.Gt)):
            out["min"] = getattr(m, "ge", getattr(m, "gt", None))
        if isinstance(m, (annotated_types.Le, annotated_types.Lt)):
            out["max"] = getattr(m, "le", getattr(m, "lt", None))
    if ann is str and "choices_from" not in hints:
        out["multiline"] = hints.get("multiline", False)
    if ann is float:
        step = hints.get("step", 1e-6)
        out["step"] = UNSET if step is None else step
    return out


def _mismatches(opts: dict, optional: bool, field) -> list[str]:
    problems = []
    for key, want in _expected(field).items():
        got = opts.get(key, UNSET)
        if got != want:
            problems.append(f"{key}: widget {got!r} != schema {want!r}")
    want_optional = (field.json_schema_extra or {}).get("ui", {}).get("optional", False)
    if optional != want_optional:
        problems.append(f"optional: widget {optional} != schema {want_optional}")
    return problems


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


def test_widgets_match_the_config_schema(comfy, monkeypatch):
    """Each config section a node builds widgets from is shown whole, each widget as its field says."""
    widgets_mod = sys.modules[f"{comfy.__name__}.nodes._widgets"]
    sections = {s.__name__: s for s in _sections(comfy)}
    original = widgets_mod.field_widget
    used: list[tuple[str, str]] = []

    def recording(name, field, owner=""):
        used.append((owner, name))
        return original(name, field, owner)

    monkeypatch.setattr(widgets_mod, "field_widget", recording)
    checked = 0
    for node_id, cls in comfy.NODE_CLASS_MAPPINGS.items():
        used.clear()
        widgets = _widgets(cls)
        for owner in {o for o, _ in used}:
            section = sections[owner]
            missing = set(_widget_fields(section)) - {n for o, n in used if o == owner}
            assert not missing, f"{node_id} shows {owner} without its widget fields {sorted(missing)}"
        for owner, name in used:
            _, opts, optional = widgets[name]
            problems = _mismatches(opts, optional, sections[owner].model_fields[name])
            assert not problems, f"{node_id}.{name} ({owner}): {'; '.join(problems)}"
            checked += 1
    assert checked >= 60  # dataset, cache, training settings, Train, sweep, LoRA tools, plot


def test_every_widget_of_every_node_is_a_schema_field(comfy):
    """No node hand-writes a widget: each INT/FLOAT/STRING/BOOLEAN/COMBO input of every node of the pack is a field
    of a config section with the same default, bounds, choices, tooltip and presentation."""
    fields_by_name: dict[str, list] = {}
    for section in _sections(comfy):
        for name, field in _widget_fields(section).items():
            fields_by_name.setdefault(name, []).append((section, field))
    assert len(comfy.NODE_CLASS_MAPPINGS) >= 15
    for node_id, cls in comfy.NODE_CLASS_MAPPINGS.items():
        widgets = _widgets(cls)
        assert widgets, f"{node_id} has no widget"
        for name, (_, opts, optional) in widgets.items():
            candidates = fields_by_name.get(name, [])
            assert candidates, f"{node_id}.{name} is a widget that no config section has a field for"
            tried = {s.__name__: _mismatches(opts, optional, f) for s, f in candidates}
            assert any(not p for p in tried.values()), f"{node_id}.{name} matches no schema field: {tried}"


def test_one_function_turns_every_field_into_a_widget(comfy, monkeypatch):
    """Replacing ``field_widget`` changes every widget of every node: no node builds a widget another way."""
    widgets_mod = sys.modules[f"{comfy.__name__}.nodes._widgets"]
    original = widgets_mod.field_widget
    calls = []

    def marked(name, field, owner=""):
        calls.append((owner, name))
        widget = original(name, field, owner)
        widget.tooltip = f"[generated] {widget.tooltip}"
        return widget

    monkeypatch.setattr(widgets_mod, "field_widget", marked)
    for node_id, cls in comfy.NODE_CLASS_MAPPINGS.items():
        widgets = _widgets(cls)
        assert widgets, f"{node_id} has no widget"
        for name, (_, opts, _) in widgets.items():
            assert opts["tooltip"].startswith("[generated] "), f"{node_id}.{name} is not made by field_widget"
        for name, (_, opts) in _inputs(cls).items():  # sockets are declared on the node, not generated
            if name not in widgets:
                assert not (opts or {}).get("tooltip", "").startswith("[generated]"), f"{node_id}.{name}"
    assert calls


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
