"""Against the real JS IPFS daemon: the same CIDs as the embedded store, verification of what the
node returns, the daemon's blocks byte for byte, and clear errors when no daemon answers."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest
import requests

from market.storage import (
    IPFS_API_ENV,
    ContentMismatchError,
    EmbeddedStore,
    IpfsConfigError,
    IpfsStore,
    IpfsUnavailableError,
    StorageError,
    file_cid,
)
from market.storage.cid import build_file_dag
from market.storage.daemon import JsIpfsDaemon
from market.storage.ipfs import api_multiaddr, api_url
from tests.storage.vectors import VECTORS, Vector

# ipfshttpclient 0.7 hands urllib3 2.x a `strict` argument it warns about on every request;
# market.storage.ipfs silences it at import, but pytest resets warning filters for each test.
pytestmark = pytest.mark.filterwarnings("ignore:The 'strict' parameter:FutureWarning")

# --- address forms (no daemon) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "multiaddr"),
    [
        ("/ip4/127.0.0.1/tcp/5001/http", "/ip4/127.0.0.1/tcp/5001/http"),
        ("/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/tcp/5001"),
        ("/dns/localhost/tcp/5001/http", "/dns/localhost/tcp/5001/http"),
        ("http://127.0.0.1:5001", "/ip4/127.0.0.1/tcp/5001/http"),
        ("http://127.0.0.1:5001/", "/ip4/127.0.0.1/tcp/5001/http"),
        ("http://127.0.0.1:5001/api/v0", "/ip4/127.0.0.1/tcp/5001/http"),
        ("https://ipfs.internal:443", "/dns/ipfs.internal/tcp/443/https"),
        ("http://[::1]:5001", "/ip6/::1/tcp/5001/http"),
        (" http://localhost:5001 ", "/dns/localhost/tcp/5001/http"),
    ],
)
def test_api_address_forms(given: str, multiaddr: str) -> None:
    assert api_multiaddr(given) == multiaddr


def test_api_url_for_messages() -> None:
    assert api_url("/ip4/127.0.0.1/tcp/5001/http") == "http://127.0.0.1:5001"
    assert api_url("http://127.0.0.1:5001") == "http://127.0.0.1:5001"


@pytest.mark.parametrize(
    "bad",
    [
        "127.0.0.1:5001",
        "http://127.0.0.1",
        "ftp://127.0.0.1:5001",
        "http://127.0.0.1:5001/ipfs/x",
        "/ip4/127.0.0.1/udp/5001",
        "/nonsense",
    ],
)
def test_bad_api_addresses(bad: str) -> None:
    with pytest.raises(IpfsConfigError, match=IPFS_API_ENV) as raised:
        IpfsStore(bad)
    assert isinstance(raised.value, StorageError) and "\n" not in str(raised.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("form", ["multiaddr", "url"])
def test_no_daemon_gives_a_clear_error(form: str) -> None:
    port = _free_port()
    api = f"/ip4/127.0.0.1/tcp/{port}/http" if form == "multiaddr" else f"http://127.0.0.1:{port}"
    store = IpfsStore(api)
    for call in (lambda: store.put(b"x"), lambda: store.get(str(file_cid(b"x"))), store.version):
        with pytest.raises(IpfsUnavailableError) as raised:
            call()
        message = str(raised.value)
        assert f"http://127.0.0.1:{port}" in message and IPFS_API_ENV in message
        assert "\n" not in message
        assert isinstance(raised.value, ConnectionError)
    with pytest.raises(IpfsUnavailableError):
        store.has(str(file_cid(b"x")))


# --- the real daemon ------------------------------------------------------------------------


@pytest.mark.ipfs
@pytest.mark.parametrize("size", [0, 12, 262_144, 262_145, 3 * 262_144 + 17])
def test_same_bytes_same_cid_in_both_backends(
    ipfs_store: IpfsStore, embedded_store: EmbeddedStore, size: int
) -> None:
    data = os.urandom(size)
    cid = ipfs_store.put(data)
    assert cid == embedded_store.put(data)
    assert ipfs_store.get(cid) == embedded_store.get(cid) == data
    assert ipfs_store.has(cid)


@pytest.mark.ipfs
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vectors_agree_with_the_daemon(ipfs_store: IpfsStore, vector: Vector) -> None:
    reply = ipfs_store._client.add(
        io.BytesIO(vector.data()),
        cid_version=1,
        raw_leaves=True,
        chunker=f"size-{vector.chunk_size}",
        pin=False,
        opts={"cid-base": "base32"},
    )
    assert reply["Hash"] == vector.cid


@pytest.mark.ipfs
def test_every_block_equals_the_daemons(ipfs_store: IpfsStore) -> None:
    """Not just the root: each block we build is byte for byte the block the daemon stored."""
    data = os.urandom(30 * 1024 + 5)
    reply = ipfs_store._client.add(
        io.BytesIO(data), cid_version=1, raw_leaves=True, chunker="size-1024", pin=False
    )
    dag = build_file_dag(data, chunk_size=1024, max_links=174)
    assert str(file_cid(data, 1024)) == str(dag.root)
    assert len(dag.blocks) == 32  # 31 leaves and their parent
    for cid, block in dag.blocks.items():
        assert ipfs_store._client.block.get(cid) == block, cid
    assert reply["Name"] == str(dag.root)  # the JS node names the entry by its CIDv1 (base32)


@pytest.mark.ipfs
def test_get_refuses_bytes_the_node_altered(
    ipfs_store: IpfsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = ipfs_store.put(b"the real proposal")
    real_cat = ipfs_store._client.cat
    monkeypatch.setattr(
        ipfs_store._client, "cat", lambda *a, **k: real_cat(*a, **k).replace(b"real", b"fake")
    )
    with pytest.raises(ContentMismatchError, match="do not hash to it"):
        ipfs_store.get(cid)


@pytest.mark.ipfs
def test_get_refuses_a_dag_built_with_other_settings(ipfs_store: IpfsStore) -> None:
    """Content the node chunked differently names a DAG this market cannot rebuild to check."""
    data = os.urandom(5000)
    other = ipfs_store._client.add(
        io.BytesIO(data),
        cid_version=1,
        raw_leaves=True,
        chunker="size-1024",
        opts={"cid-base": "base32"},
    )["Hash"]
    with pytest.raises(ContentMismatchError):
        ipfs_store.get(str(other))


@pytest.mark.ipfs
def test_put_refuses_a_node_that_answers_another_cid(
    ipfs_store: IpfsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_add = ipfs_store._client.add
    monkeypatch.setattr(
        ipfs_store._client, "add", lambda *a, **k: real_add(*a, **{**k, "chunker": "size-1024"})
    )
    with pytest.raises(ContentMismatchError, match="add settings differ"):
        ipfs_store.put(os.urandom(5000))


@pytest.mark.ipfs
@pytest.mark.usefixtures("jsipfs")
def test_daemon_listens_on_loopback_and_stops_cleanly() -> None:
    """A daemon of its own: after stop() its API is gone, its repository deleted, and the store
    says what to do."""
    with JsIpfsDaemon() as daemon:
        assert daemon.api is not None and daemon.api.startswith("/ip4/127.0.0.1/tcp/")
        assert daemon.startup_seconds is not None
        store = IpfsStore(daemon.url)
        assert store.version()
        cid = store.put(b"short-lived")
        repo = daemon.repo
        url = daemon.url
        assert repo is not None and repo.exists()
        assert "Daemon is ready" in daemon.log
    assert not Path(repo).exists()
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{url}/api/v0/version", timeout=2)
    with pytest.raises(IpfsUnavailableError, match=IPFS_API_ENV):
        store.get(cid)
