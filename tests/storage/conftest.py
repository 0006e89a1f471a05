"""Storage fixtures: one JS IPFS daemon per test session, and each backend as a `store`.

The shared suite (test_store.py) takes `store`, which runs each test on the embedded store and
again on an `IpfsStore` talking to the real daemon (marked `ipfs`; `-m "not ipfs"` skips those).
Without node_modules/ipfs the daemon tests skip, saying so; `make install` installs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from market.storage import EmbeddedStore, IpfsDaemonError, IpfsStore, Storage
from market.storage.daemon import JsIpfsDaemon, find_jsipfs


@pytest.fixture(scope="session")
def jsipfs() -> None:
    """Skips the test, saying why, when node_modules has no JS IPFS node."""
    try:
        find_jsipfs()
    except IpfsDaemonError as exc:
        pytest.skip(f"needs the npm package `ipfs` (make install): {exc}")


@pytest.fixture(scope="session")
def ipfs_daemon(jsipfs: None) -> Iterator[JsIpfsDaemon]:
    """A JS IPFS daemon on 127.0.0.1, offline, in a temporary repository; stopped at the end."""
    with JsIpfsDaemon() as daemon:
        yield daemon


@pytest.fixture
def ipfs_store(ipfs_daemon: JsIpfsDaemon) -> Iterator[IpfsStore]:
    # A short fetch timeout: an offline node never finds absent content, it only waits.
    with IpfsStore(ipfs_daemon.api or "", fetch_timeout=1) as store:
        yield store


@pytest.fixture
def embedded_store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "storage")


@pytest.fixture(params=["embedded", pytest.param("ipfs", marks=pytest.mark.ipfs)])
def store(request: pytest.FixtureRequest) -> Storage:
    backend: Storage = request.getfixturevalue(f"{request.param}_store")
    return backend
