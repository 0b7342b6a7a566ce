"""The declared dependencies are the ones the pack's code imports: no undeclared import, no unused requirement.

The pack's code is ``trainer_core/``, ``nodes/`` and the package ``__init__.py``; every ``import`` and absolute
``from ... import`` statement in it is read from the syntax tree, anywhere in the file (lazy imports inside
functions count). ``tests/`` and ``bench/`` are not the pack: ltx-core's own imports (einops and friends) and the
reference benchmark's peft are set up by ``tools/setup_env.sh``, not declared here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[2]
PACK_FILES = sorted([REPO / "__init__.py", *(REPO / "trainer_core").rglob("*.py"), *(REPO / "nodes").rglob("*.py")])
OWN_PACKAGES = {"trainer_core"}  # ``nodes/`` is only ever imported relatively (ComfyUI owns the name ``nodes``)
COMFYUI_MODULES = {  # ComfyUI's own top-level modules, present wherever the nodes run
    "comfy", "comfy_api", "comfy_execution", "comfy_extras", "comfy_config", "folder_paths", "server", "nodes",
    "node_helpers", "latent_preview", "execution", "app", "utils", "protocol", "comfyui_version",
}  # fmt: skip
OPTIONAL_LAZY = {  # imported only inside functions, behind a clear message where they are missing
    "ltx_core": "Lightricks' reference model: the headless backbone of the CLI, the optional extra `ltx`",
    "bitsandbytes": "8-bit AdamW, only when the config asks for it (README: `pip install bitsandbytes`)",
    "comfy_aimdo": "ComfyUI's own dynamic-VRAM allocator (a ComfyUI requirement), read for the memory stat if present",
}
NOT_IN_REQUIREMENTS = {  # declared in pyproject only
    "torch": "ComfyUI installs the user's (CUDA) torch; requirements.txt must not make ComfyUI-Manager replace it",
}
# Import name -> distribution name where they differ and the distribution is not installed to ask.
KNOWN_DISTRIBUTIONS = {"PIL": "pillow", "yaml": "pyyaml", "annotated_types": "annotated-types"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(line: str) -> str:
    return _norm(re.match(r"[A-Za-z0-9._-]+", line).group(0))


def _requirements_txt() -> list[str]:
    lines = (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level module, line, at module level) for every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / try-blocks at module level still run at import
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno, id(node) in top_level))
    return found


def third_party_imports() -> dict[str, list[str]]:
    """Top-level third-party module -> ``file:line`` of each import of it in the pack's code."""
    ignored = set(sys.stdlib_module_names) | OWN_PACKAGES | COMFYUI_MODULES | {"__future__"}
    out: dict[str, list[str]] = {}
    for path in PACK_FILES:
        for module, line, _ in _imports(path):
            if module not in ignored:
                out.setdefault(module, []).append(f"{path.relative_to(REPO)}:{line}")
    return out


def distribution_of(module: str) -> str:
    installed = importlib.metadata.packages_distributions().get(module)
    if installed:
        return _norm(installed[0])
    return _norm(KNOWN_DISTRIBUTIONS.get(module, module))


def test_the_scan_sees_the_pack():
    """Guards the scan itself: it must find the imports we know are there, lazy ones included."""
    found = third_party_imports()
    assert {"torch", "safetensors", "av", "numpy", "pydantic", "yaml", "PIL", "ltx_core"} <= set(found)
    assert not {"comfy", "folder_paths", "os", "trainer_core"} & set(found)


def test_every_import_is_declared():
    declared = {_requirement_name(r) for r in _requirements_txt()}
    undeclared = {
        module: where
        for module, where in third_party_imports().items()
        if module not in OPTIONAL_LAZY
        and module not in NOT_IN_REQUIREMENTS
        and distribution_of(module) not in declared
    }
    assert not undeclared, f"imported by the pack but not in requirements.txt: {undeclared}"


def test_every_requirement_is_imported():
    used = {distribution_of(m) for m in third_party_imports()}
    unused = [r for r in _requirements_txt() if _requirement_name(r) not in used]
    assert not unused, f"requirements.txt lists packages the pack never imports: {unused}"


def test_optional_imports_are_lazy():
    """An optional package imported at module level would break the pack wherever it is not installed."""
    eager = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in PACK_FILES
        for module, line, at_module_level in _imports(path)
        if module in OPTIONAL_LAZY and at_module_level
    ]
    assert not eager


def test_ltx_core_is_the_ltx_extra():
    extras = _pyproject()["project"]["optional-dependencies"]
    assert [_requirement_name(r) for r in extras["ltx"]] == ["ltx-core"]


def test_pyproject_and_requirements_agree():
    """Same packages with the same version bounds; pyproject adds only torch (see NOT_IN_REQUIREMENTS)."""
    pyproject = {_requirement_name(r): r.replace(" ", "") for r in _pyproject()["project"]["dependencies"]}
    requirements = {_requirement_name(r): r.replace(" ", "") for r in _requirements_txt()}
    for name in NOT_IN_REQUIREMENTS:
        assert name in pyproject and name not in requirements
        del pyproject[name]
    assert pyproject == requirements
