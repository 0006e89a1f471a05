"""Shared fixtures: one chain per backend per session, a fresh market per test.

The chain-facing suites take the `chain` fixture, which runs each test on the embedded py-evm
chain and again on a real Anvil process (marked `anvil`; `-m "not anvil"` skips those).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from market.chain import Chain
from tests.contracts.world import World


@pytest.fixture(scope="session", autouse=True)
def _own_market_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Code under test that falls back on the default home (`~/.market`: its embedded store,
    node databases, wallet) writes into this run's temporary directory instead; tests that
    need a home of their own still set `MARKET_HOME`."""
    before = os.environ.get("MARKET_HOME")
    os.environ["MARKET_HOME"] = str(tmp_path_factory.mktemp("market-home"))
    yield
    if before is None:
        os.environ.pop("MARKET_HOME", None)
    else:
        os.environ["MARKET_HOME"] = before


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


_first_failure: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    _first_failure["config"] = config


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """The first failure's one-line cause, printed where it happens (amid the progress dots):
    CI shows only part of a long log, and a failure in a fixture that many tests share (a full
    disk once) otherwise shows only as a run of E's far from its traceback."""
    if "shown" in _first_failure or not report.failed:
        return
    _first_failure["shown"] = report.nodeid
    crash = getattr(report.longrepr, "reprcrash", None)
    cause = crash.message.splitlines()[0] if crash is not None else str(report.longrepr)[:300]
    free = shutil.disk_usage(tempfile.gettempdir()).free // 2**20
    line = (f"[first failure] {report.nodeid} ({report.when}): {cause} "
            f"[{free} MiB free in {tempfile.gettempdir()}]")  # fmt: skip
    config = _first_failure["config"]
    terminal = config.pluginmanager.get_plugin("terminalreporter")  # type: ignore[attr-defined]
    if terminal is not None:
        terminal.write_line("")
        terminal.write_line(line)
