"""Shared fixtures: one chain per backend per session, a fresh market per test.

The chain-facing suites take the `chain` fixture, which runs each test on the embedded py-evm
chain and again on a real Anvil process (marked `anvil`; `-m "not anvil"` skips those).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from market.chain import Chain
from tests.contracts.world import World


@pytest.fixture(scope="session")
def embedded_chain() -> Iterator[Chain]:
    with Chain.embedded() as chain:
        yield chain


@pytest.fixture(scope="session")
def anvil_chain() -> Iterator[Chain]:
    with Chain.anvil() as chain:
        yield chain


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def chain(request: pytest.FixtureRequest) -> Chain:
    return request.getfixturevalue(f"{request.param}_chain")


@pytest.fixture
def world(chain: Chain) -> World:
    """A freshly deployed market on `chain`, with helpers to populate it."""
    return World.deploy(chain)


# Suites that drive the real `market` entry point (keystores, chains, nodes as processes), the
# light and heavy nodes over HTTP, a real IPFS daemon, retraining for the valuation figures and
# the ape toolchain: seconds to minutes each. `make test` runs them; `make test-fast`
# (`-m "not anvil and not slow"`) leaves them out.
SLOW_SUITES = (
    "tests/cli/", "tests/nodes/", "tests/storage/test_ipfs.py", "tests/test_ape.py",
    "tests/valuation/tip/test_fidelity.py", "tests/valuation/tip/test_market.py",
)  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        where = item.path.relative_to(root).as_posix()
        if where.startswith(SLOW_SUITES):
            item.add_marker(pytest.mark.slow)
