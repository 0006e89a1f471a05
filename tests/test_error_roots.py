"""One error root per package: `compute.errors.ComputeError`, `nodes.errors.NodeError` and, for
`market`'s libraries, `market.errors.MarketError`. Every exception class a library module
defines derives from its package's root (the applications' own, such as the CLI's click
exceptions, are theirs)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from compute.errors import ComputeError
from market.errors import MarketError
from nodes.errors import NodeError

ROOT = Path(__file__).resolve().parent.parent
APPLICATIONS = ("market.cli", "market.demos", "market.bench", "market.sandbox")
ROOTS = {"compute": ComputeError, "nodes": NodeError, "market": MarketError}
PRIVATE = {"market.wallet.keystore._Problem"}
"""Raised and caught inside one function, never out of it."""


def _modules(top: str) -> list[str]:
    names = []
    for path in sorted((ROOT / top).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if not any(name == a or name.startswith(a + ".") for a in APPLICATIONS):
            names.append(name)
    return names


@pytest.mark.parametrize("top", sorted(ROOTS))
def test_every_library_error_derives_from_its_package_root(top: str) -> None:
    defined = {}
    for name in _modules(top):
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name:
                defined[f"{name}.{cls.__qualname__}"] = cls
    assert len(defined) >= 8
    stray = sorted(n for n, c in defined.items() if not issubclass(c, ROOTS[top]))
    assert [n for n in stray if n not in PRIVATE] == []
