"""The package's layers point one way: each subpackage imports only the ones below it.

The order (bottom first) is the architecture of DESIGN.md / docs/extending.md. Every import is
counted, function-level and ``if TYPE_CHECKING:`` ones included (a lazy or annotation-only import
is still a dependency). A new subpackage must be placed in LAYERS.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ovseg"

LAYERS = [
    "utils",
    "config",
    "structures",
    "text",
    "checkpoint",
    "zoo",
    "visualization",
    "models",
    "data",
    "inference",
    "export",
    "evaluation",
    "engine",
    "labelling",
    "app",
    "cli",
]
RANK = {name: i for i, name in enumerate(LAYERS)}


def _imports(tree: ast.AST, module: str) -> list[tuple[str, int]]:
    """(imported ovseg subpackage, line) for every runtime import in ``tree``."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module
                base = module.split(".")[: -node.level]
                names = [".".join([*base, node.module] if node.module else base)]
            elif node.module:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "ovseg" and len(parts) > 1:
                out.append((parts[1], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _modules() -> list[tuple[str, Path]]:
    mods = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1] + ["__init__"]  # a package's own level for relative imports
        mods.append((".".join(parts), path))
    return mods


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert subpackages <= set(LAYERS), f"place {sorted(subpackages - set(LAYERS))} in LAYERS"


def test_layers_point_one_way():
    violations = []
    for module, path in _modules():
        parts = module.split(".")
        if len(parts) < 3:  # ovseg/__init__.py: the public facade may import anything lazily
            continue
        src = parts[1]
        for dst, line in _imports(ast.parse(path.read_text(encoding="utf-8")), module):
            if dst == src or dst not in RANK:
                continue
            if RANK[dst] > RANK[src]:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {src} -> {dst}")
    assert not violations, "imports that point up the layers:\n" + "\n".join(violations)


def test_models_import_nothing_from_the_engine():
    for module, path in _modules():
        if module.startswith("ovseg.models."):
            dsts = {d for d, _ in _imports(ast.parse(path.read_text(encoding="utf-8")), module)}
            assert "engine" not in dsts and "cli" not in dsts, path


@pytest.mark.parametrize(
    "code",
    [
        "from ovseg.engine import x",  # a direct import
        "def f():\n    from ovseg.cli import demo",  # a lazy one counts too
        "from ..engine import trainer",  # relative
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ovseg.cli import x",
    ],
)
def test_the_checker_sees_upward_imports(code):
    found = {d for d, _ in _imports(ast.parse(code), "ovseg.models.segmentors")}
    assert found & {"engine", "cli"}


def test_loading_a_config_imports_no_torch_and_the_api_no_engine():
    import subprocess
    import sys

    code = (
        "import sys, ovseg.config as c; c.load_config('configs/tests/fcclip_tiny.yaml');"
        "assert 'torch' not in sys.modules, 'config imported torch';"
        "from ovseg import Segmenter;"
        "bad = sorted(m for m in sys.modules if m.startswith(('ovseg.engine', 'ovseg.cli')));"
        "assert not bad, bad"
    )
    repo = PACKAGE.parent
    r = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
