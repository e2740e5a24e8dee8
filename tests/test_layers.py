"""No import runs back up a layer: every `blockgen.*` import of a module (top-level or inside a function) names a
module of its own layer or a lower one.

Layers, lowest first: the loaders and native models; the engine; the loaded model (runtime); planners, memory and
images; documents and adaptation; the faces (cli and its flags, api, integrations, the package itself).
`blockgen.errors` and the options base (`blockgen.options`) are importable by all. Planners, memory and images share a
floor and stand apart: none imports another (what two of them need lives below them, as the sentence embedder does
in `blockgen.loading`); so do documents and adaptation.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS = {
    "blockgen.errors": 0,
    "blockgen.options": 0,  # the options base (pydantic + errors only): importable by all
    "blockgen.models": 1,
    "blockgen.loading": 1,
    "blockgen.engine": 2,
    "blockgen.runtime": 3,
    "blockgen.planners": 4,
    "blockgen.memory": 4,
    "blockgen.images": 4,
    "blockgen.document": 5,
    "blockgen.adapt": 5,
    "blockgen.cli": 6,
    "blockgen.flags": 6,  # the CLI's flags, built from the options models
    "blockgen.api": 6,
    "blockgen.integrations": 6,
    "blockgen.serve": 6,  # the HTTP server
    "blockgen": 6,  # the package's __init__: a face
}
# packages of one layer that must not import one another
APART = [{"blockgen.planners", "blockgen.memory", "blockgen.images"}, {"blockgen.document", "blockgen.adapt"}]
# source folder -> the package it is installed as (pyproject's package-dir)
SOURCES = {"blockgen": "blockgen", "planners": "blockgen.planners", "memory": "blockgen.memory"}


def package_of(module: str) -> str:
    """The longest LAYERS entry that is `module` or a package above it."""
    parts = module.split(".")
    return next(".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in LAYERS)


def layer_of(module: str) -> int:
    return LAYERS[package_of(module)]


def modules() -> dict[str, Path]:
    """Every module of the installed package by its dotted name."""
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def blockgen_imports(module: str, path: Path) -> set[str]:
    """The `blockgen.*` modules a module imports anywhere in its body (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from blockgen import x` may import the submodule blockgen.x: count what it names
            names |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return {name for name in names if name == "blockgen" or name.startswith("blockgen.")}


MODULES = modules()


def test_the_table_covers_every_module():
    assert "blockgen.planners.latent" in MODULES and "blockgen.memory.store" in MODULES
    assert set(LAYERS) - {"blockgen", "blockgen.errors"} <= {package_of(m) for m in MODULES}
    for module in MODULES:
        assert package_of(module) != "blockgen" or module == "blockgen", f"{module} is in no layer: add it to LAYERS"


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, path in MODULES.items():
        own = layer_of(module)
        for imported in sorted(blockgen_imports(module, path)):
            if layer_of(imported) > own:
                upward.append(f"{module} (layer {own}) imports {imported} (layer {layer_of(imported)})")
    assert not upward, "\n".join(upward)


def test_packages_of_one_floor_stand_apart():
    across = []
    for module, path in MODULES.items():
        mine = package_of(module)
        for imported in sorted(blockgen_imports(module, path)):
            theirs = package_of(imported)
            if theirs != mine and any({mine, theirs} <= group for group in APART):
                across.append(f"{module} imports {imported}")
    assert not across, "\n".join(across)
