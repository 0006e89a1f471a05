"""The pure core of `compute` imports no network, chain or file library and opens no files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import compute

# Every module of the package: the I/O lives in `nodes/` and `market/`.
ROOT = Path(compute.__file__).parent
PURE = sorted(str(path.relative_to(ROOT).with_suffix("")) for path in ROOT.rglob("*.py"))

FORBIDDEN = {
    # network
    "socket", "ssl", "http", "urllib", "requests", "httpx", "aiohttp", "websockets", "fastapi",
    "asyncio", "selectors", "ipfshttpclient",
    # chain
    "web3", "eth_account", "eth_abi", "eth_utils", "eth_tester", "eth", "ape", "market",
    # files, processes and clocks
    "os", "io", "pathlib", "shutil", "tempfile", "sqlite3", "pickle", "shelve", "glob",
    "subprocess", "time", "datetime", "threading", "multiprocessing", "nodes",
}  # fmt: skip

FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval", "__import__"}


def _module_path(name: str) -> Path:
    return ROOT / f"{name}.py"


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io_library(name: str) -> None:
    tree = ast.parse(_module_path(name).read_text())
    assert not (_imports(tree) & FORBIDDEN), (
        f"compute/{name}.py imports {_imports(tree) & FORBIDDEN}"
    )


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_call_no_io_builtin(name: str) -> None:
    tree = ast.parse(_module_path(name).read_text())
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not (calls & FORBIDDEN_CALLS)


def test_the_check_would_catch_a_forbidden_import() -> None:
    tree = ast.parse("import os.path\nfrom urllib import request\nfrom . import sharing\n")
    assert _imports(tree) & FORBIDDEN == {"os", "urllib"}


def test_floats_meet_data_only_in_the_encoding_module() -> None:
    # Only encoding converts data to or from float64; the other pure modules never do (the
    # ensemble's plaintext baseline and its probability decoding work in floats by design).
    for name in PURE:
        if name in ("encoding", "dp", "ensemble", "postprocess", "scoring", "products"):
            # postprocess: figures of a decoded release (the audits' Gini, shares and ratios),
            # floats by design; scoring: standardizing the forecasts' outcomes and decoding the
            # scores; products: encoding a valuation's query and gradients, decoding its totals
            continue
        source = _module_path(name).read_text()
        assert "float64" not in source.replace("NDArray[np.float64]", ""), name
        assert "astype(float" not in source and "astype(np.float" not in source, name
