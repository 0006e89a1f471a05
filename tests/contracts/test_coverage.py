"""Guards on the contract suite itself: every external function of our contracts is exercised
somewhere in the tests, and every custom error has a test that names it in `pytest.raises`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from market.chain.artifacts import load_artifact

TESTS = Path(__file__).parents[1]
SOURCES = "\n".join(
    p.read_text() for p in TESTS.rglob("test_*.py") if p.name != Path(__file__).name
)


def _abi(kind: str, contract: str) -> list[str]:
    return sorted({item["name"] for item in load_artifact(contract).abi if item["type"] == kind})


OWN_ERRORS = [
    n
    for c in ("Marketplace", "DataToken")
    for n in _abi("error", c)
    if n.startswith(("Marketplace", "DataToken"))
]


@pytest.mark.parametrize("name", OWN_ERRORS)
def test_every_custom_error_is_expected_by_name_in_a_test(name):
    # Either `pytest.raises(E.Name)` or a parametrize table of `E.Name` fed to pytest.raises.
    assert re.search(rf"\bE\.{name}\b", SOURCES), f"no test expects {name}"


def _client_methods() -> dict[str, set[str]]:
    """For each contract function, the client methods whose body calls it, directly or through
    other methods of the same client (`self.submit_job(` inside `post_job`)."""
    calls: dict[str, set[str]] = {}
    found: dict[str, set[str]] = {}
    for path in (TESTS.parent / "market").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                body = ast.unparse(node)
                calls.setdefault(node.name, set()).update(re.findall(r"self\.(\w+)\(", body))
                for name in re.findall(r"functions\.(\w+)\(", body):
                    found.setdefault(name, set()).add(node.name)
    for methods in found.values():
        grew = True
        while grew:
            callers = {m for m, callees in calls.items() if callees & methods}
            grew = not callers <= methods
            methods |= callers
    return found


CONSTANTS = {"MAX_COMMITTEE", "MAX_FEE_BPS", "MIN_SLASHING_COMMITTEE", "SLASH_TYPEHASH",
             "RESULT_TYPEHASH", "ABORT_TYPEHASH", "PARTICIPATION_TYPEHASH"}  # fmt: skip


@pytest.mark.parametrize("name", [n for n in _abi("function", "Marketplace") if n not in CONSTANTS])
def test_every_marketplace_function_is_exercised_by_a_test(name):
    """Called directly in a test, or through a client method that a test calls."""
    if re.search(rf"functions\.{name}\(", SOURCES):
        return
    methods = _client_methods().get(name, set())
    assert methods, f"no client method calls {name}"
    assert any(re.search(rf"\.{m}\(", SOURCES) for m in methods), f"no test exercises {name}"


def test_constants_match_python(world):
    from market.escrow import eip712

    fns = world.escrow.contract.functions
    assert world.chain.call(fns.RESULT_TYPEHASH()) == eip712.RESULT_TYPEHASH
    assert world.chain.call(fns.SLASH_TYPEHASH()) == eip712.SLASH_TYPEHASH
    assert world.chain.call(fns.ABORT_TYPEHASH()) == eip712.ABORT_TYPEHASH
    assert world.chain.call(fns.PARTICIPATION_TYPEHASH()) == eip712.PARTICIPATION_TYPEHASH
    assert world.chain.call(fns.MAX_FEE_BPS()) == 5_000
    assert world.chain.call(fns.MAX_COMMITTEE()) == 16
    assert world.chain.call(fns.MIN_SLASHING_COMMITTEE()) == 3
