"""What a default install brings: `pip install flowrelay` carries every distribution the code imports, and no
Django (the docs pages' assets come with the `flowrelay[docs]` extra).

Read from the installed package's metadata (its `Requires-Dist` lines, without extras) and the metadata of what
they require in turn, as pip resolves them; and from the imports in the package's own source files.
"""

from __future__ import annotations

import ast
import contextlib
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"relay", "loadtest", "flowrelay"}


def _requirements(dist: str, extra: str = "") -> list[Requirement]:
    """The requirements of an installed distribution that apply without extras (or with `extra`)."""
    out = []
    for line in metadata.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": extra}):
            out.append(req)
    return out


def _closure(roots: list[Requirement]) -> set[str]:
    """Every distribution pip installs for `roots`, by canonical name (those installed here are followed)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        with contextlib.suppress(metadata.PackageNotFoundError):  # not installed here: its marker says not
            todo.extend(_requirements(req.name))
    return seen


def test_a_default_install_brings_no_django() -> None:
    default = _closure(_requirements("flowrelay"))
    assert "django" not in default
    assert "drf-spectacular-sidecar" not in default
    docs_only = {canonicalize_name(r.name) for r in _requirements("flowrelay", "docs")} - {
        canonicalize_name(r.name) for r in _requirements("flowrelay")
    }
    assert docs_only == {"drf-spectacular-sidecar"}


def _imported_modules() -> set[str]:
    """Top-level modules that the package's source imports at module level or in functions."""
    found: set[str] = set()
    for package in FIRST_PARTY:
        for path in (REPO / package).rglob("*.py"):
            if "/proto/" in path.as_posix():
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - FIRST_PARTY - set(sys.stdlib_module_names) - {"__future__"}


def test_a_default_install_brings_everything_the_code_imports() -> None:
    default = _closure(_requirements("flowrelay"))
    providers = metadata.packages_distributions()
    missing = {}
    for module in sorted(_imported_modules()):
        dists = {canonicalize_name(d) for d in providers.get(module, [module])}
        if not dists & default:
            missing[module] = sorted(dists)
    assert not missing, f"imported, but no default requirement brings them: {missing}"
