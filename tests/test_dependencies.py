"""Every package trainmedic imports is declared in pyproject.toml, and every declared package is imported.

Core modules import optional packages (integrations, TensorBoard) only inside functions, so ``import
trainmedic`` works with the core dependencies alone."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "trainmedic"
# import name -> distribution name where they differ
DISTRIBUTION = {"sklearn": "scikit-learn", "tensorflow": "tensorflow-cpu", "yaml": "pyyaml"}
# declared but imported by another package, not by trainmedic: why each is needed
NEEDED_BY_OTHERS = {"accelerate": "transformers.Trainer requires it"}


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {
        _requirement_name(r)
        for name, reqs in project["optional-dependencies"].items()
        if name != "dev"
        for r in reqs
        if not r.startswith("trainmedic")
    }
    return core, extras


def _imports() -> dict[str, list[tuple[str, bool]]]:
    """Third-party top-level package -> [(file, imported at module level)]."""
    out: dict[str, list[tuple[str, bool]]] = {}
    for p in sorted(SRC.rglob("*.py")):
        tree = ast.parse(p.read_text())
        top = {id(n) for n in tree.body}
        top |= {id(n) for s in tree.body if isinstance(s, ast.Try) for n in s.body}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                pkg = name.split(".")[0]
                if pkg in sys.stdlib_module_names or pkg == "trainmedic":
                    continue
                out.setdefault(pkg, []).append((str(p.relative_to(SRC)), id(node) in top))
    return out


def _dist(pkg: str) -> str:
    return DISTRIBUTION.get(pkg, pkg).lower()


def test_every_import_is_declared() -> None:
    core, extras = _declared()
    undeclared = {pkg: files for pkg, files in _imports().items() if _dist(pkg) not in core | extras}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_optional_packages_are_imported_lazily_outside_the_integrations() -> None:
    core, _ = _declared()
    eager = {
        pkg: [f for f, top in files if top and not f.startswith("integrations/")]
        for pkg, files in _imports().items()
        if _dist(pkg) not in core
    }
    eager = {k: v for k, v in eager.items() if v}
    assert not eager, f"optional packages imported at module level by core modules: {eager}"


def test_every_declared_package_is_imported() -> None:
    core, extras = _declared()
    imported = {_dist(pkg) for pkg in _imports()}
    unused = (core | extras) - imported - set(NEEDED_BY_OTHERS) - {"tomli"}  # tomli: Python 3.10 only
    assert not unused, f"declared in pyproject.toml but imported nowhere in trainmedic: {sorted(unused)}"
