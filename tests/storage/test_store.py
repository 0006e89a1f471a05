"""The `Storage` contract, run on both backends: the embedded store and a real IPFS daemon."""

from __future__ import annotations

import os

import pytest

from market.storage import (
    ContentNotFoundError,
    InvalidCidError,
    InvalidUriError,
    Storage,
    UnsupportedCidError,
    cid_of_uri,
    fetch_uri,
    file_cid,
    uri_for,
)
from tests.storage.vectors import VECTORS

# ipfshttpclient 0.7 hands urllib3 2.x a `strict` argument it warns about on every request;
# silenced at import in market.storage.ipfs, but pytest resets filters for each test.
pytestmark = pytest.mark.filterwarnings("ignore:The 'strict' parameter:FutureWarning")

SIZES = [0, 1, 12, 262_144, 262_145, 1_000_003]


def test_is_a_storage(store: Storage) -> None:
    assert isinstance(store, Storage)


@pytest.mark.parametrize("size", SIZES)
def test_put_get_round_trip(store: Storage, size: int) -> None:
    data = os.urandom(size)
    cid = store.put(data)
    assert cid == str(file_cid(data))
    assert store.has(cid)
    assert store.get(cid) == data


def test_known_vectors(store: Storage) -> None:
    for vector in VECTORS:
        if vector.chunk_size == 262_144 and vector.size < 2_000_000:
            assert store.put(vector.data()) == vector.cid, vector.name


def test_put_twice_gives_the_same_cid(store: Storage) -> None:
    data = os.urandom(1000)
    assert store.put(data) == store.put(data)
    assert store.get(store.put(data)) == data


def test_missing_content(store: Storage) -> None:
    absent = str(file_cid(os.urandom(32)))
    assert not store.has(absent)
    with pytest.raises(ContentNotFoundError, match=absent) as raised:
        store.get(absent)
    assert isinstance(raised.value, KeyError)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "bad", ["", "not-a-cid", "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n", "bafy/../etc"]
)
def test_malformed_cids(store: Storage, bad: str) -> None:
    with pytest.raises(InvalidCidError):
        store.get(bad)
    with pytest.raises(InvalidCidError):
        store.has(bad)


def test_uris(store: Storage) -> None:
    cid = store.put(b"proposal")
    uri = uri_for(cid)
    assert uri == f"ipfs://{cid}"
    assert cid_of_uri(uri) == cid
    assert cid_of_uri(uri + "/") == cid
    assert fetch_uri(uri, store) == b"proposal"


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("https://example.org/x", InvalidUriError),
        (
            "ipfs://bafybeidide6lpcdutn3we5vvypssfhlq2n265w6dygwj37fyeklhlmfi34/a.txt",
            InvalidUriError,
        ),
        ("ipfs://nope", InvalidCidError),
        ("ipfs://QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n", UnsupportedCidError),
    ],
)
def test_bad_uris(uri: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        cid_of_uri(uri)
    with pytest.raises(InvalidCidError):
        uri_for("nope")


def test_documents_fetch_ipfs_uris_from_the_configured_store(tmp_path, monkeypatch) -> None:
    """The nodes fetch `ipfs://` proposals and blobs through `open_storage`, verified."""
    from market.escrow.documents import DocumentError, fetch
    from market.storage import EmbeddedStore, uri_for

    monkeypatch.setenv("MARKET_HOME", str(tmp_path))
    monkeypatch.delenv("MARKET_IPFS_API", raising=False)
    store = EmbeddedStore(tmp_path / "storage")
    uri = uri_for(store.put(b'{"version": 1}'))
    assert fetch(uri) == b'{"version": 1}'
    missing = uri_for(EmbeddedStore(tmp_path / "other").put(b"elsewhere"))
    with pytest.raises(DocumentError, match="cannot fetch ipfs://"):
        fetch(missing)
