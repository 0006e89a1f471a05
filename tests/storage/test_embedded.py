"""The embedded store on disk: layout, tampering, repair, and processes writing at once."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from market.home import HOME_ENV
from market.storage import (
    IPFS_API_ENV,
    ContentMismatchError,
    EmbeddedStore,
    IpfsStore,
    StorageError,
    file_cid,
    open_storage,
)


def test_files_are_named_by_cid_in_flatfs_shards(embedded_store: EmbeddedStore) -> None:
    cid = embedded_store.put(b"hello world\n")
    path = embedded_store.path_for(cid)
    assert path == embedded_store.root / cid[-3:-1] / cid
    assert path.read_bytes() == b"hello world\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [cid]  # no temporary file left behind


@pytest.mark.parametrize("size", [12, 400_000])
def test_get_refuses_a_tampered_file(embedded_store: EmbeddedStore, size: int) -> None:
    data = os.urandom(size)
    cid = embedded_store.put(data)
    path = embedded_store.path_for(cid)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert embedded_store.has(cid)  # present, but...
    with pytest.raises(ContentMismatchError, match="altered or damaged") as raised:
        embedded_store.get(cid)
    assert str(path) in str(raised.value)
    assert isinstance(raised.value, StorageError) and isinstance(raised.value, ValueError)


def test_put_repairs_a_damaged_file(embedded_store: EmbeddedStore) -> None:
    cid = embedded_store.put(b"original")
    embedded_store.path_for(cid).write_bytes(b"damaged!")
    assert embedded_store.put(b"original") == cid
    assert embedded_store.get(cid) == b"original"


def test_a_file_under_another_files_name_is_refused(embedded_store: EmbeddedStore) -> None:
    a, b = embedded_store.put(b"a"), embedded_store.put(b"b")
    embedded_store.path_for(a).write_bytes(embedded_store.path_for(b).read_bytes())
    with pytest.raises(ContentMismatchError):
        embedded_store.get(a)


def _put(root: str, data: bytes) -> str:
    return EmbeddedStore(root).put(data)


def test_concurrent_puts_from_processes(tmp_path: Path) -> None:
    """Four processes store the same bytes (and four others distinct bytes) at the same time."""
    root = str(tmp_path / "storage")
    same = os.urandom(600_000)
    distinct = [os.urandom(1000) for _ in range(4)]
    with ProcessPoolExecutor(max_workers=4, mp_context=get_context("spawn")) as pool:
        cids = list(pool.map(_put, [root] * 8, [same] * 4 + distinct))
    assert set(cids[:4]) == {str(file_cid(same))}
    store = EmbeddedStore(root)
    assert store.get(cids[0]) == same
    assert [store.get(c) for c in cids[4:]] == distinct
    leftovers = [p for p in Path(root).rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []


def test_open_storage_defaults_to_market_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv(IPFS_API_ENV, raising=False)
    store = open_storage()
    assert isinstance(store, EmbeddedStore)
    assert store.root == tmp_path / "home" / "storage"
    assert store.get(store.put(b"x")) == b"x"


def test_open_storage_picks_ipfs_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IPFS_API_ENV, "http://127.0.0.1:5001")
    store = open_storage()
    assert isinstance(store, IpfsStore)
    assert store.api == "/ip4/127.0.0.1/tcp/5001/http"
