"""The packages' layers, as the README's table states them: `compute/` (the pure core) imports
no other package of the project; `nodes/` (the light and heavy nodes' I/O) is imported by no
library below it; the applications (`market/cli`, `market/demos`, `market/bench`, and
`market/sandbox`, the populated market they and the tests build on) are imported
by nothing but themselves and the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPLICATIONS = ("market.cli", "market.demos", "market.bench", "market.sandbox")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


SOURCES = sorted(p for top in ("compute", "nodes", "market") for p in (ROOT / top).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: _module(p))
def test_imports_follow_the_layers(path: Path) -> None:
    module = _module(path)
    imported = _imports(path)
    if _under(module, ("compute",)):
        forbidden: tuple[str, ...] = ("market", "nodes")
    elif _under(module, ("nodes",)):
        forbidden = APPLICATIONS
    elif _under(module, APPLICATIONS):
        forbidden = ()
    else:  # market's libraries: chain, escrow, staking, valuation, storage, wallet, ...
        forbidden = ("nodes", *APPLICATIONS)
    wrong = sorted(name for name in imported if _under(name, forbidden))
    assert not wrong, f"{module} imports {wrong} across the layers"
