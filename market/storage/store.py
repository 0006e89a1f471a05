"""The storage interface, the choice of backend, and `ipfs://` URIs.

Every market object kept off chain (proposals, dataset metadata, mock data, model weights,
encrypted queries and results) goes through `Storage`: `put` returns the object's CID, and `get`
returns bytes only after re-hashing them against that CID, whichever backend holds them. On
chain and in messages an object is named by `uri_for(cid)`, `ipfs://<cid>`, which any IPFS
tool resolves, and which `fetch_uri` reads back through whichever store this process uses.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

from market.home import Home
from market.storage.cid import parse_cid
from market.storage.embedded import EmbeddedStore
from market.storage.errors import StorageError
from market.storage.ipfs import IPFS_API_ENV, IpfsStore

URI_SCHEME = "ipfs://"


class InvalidUriError(StorageError, ValueError):
    """A string that is not `ipfs://<cid>`."""


@runtime_checkable
class Storage(Protocol):
    """A content-addressed store. Both backends pass the same test suite."""

    def put(self, data: bytes) -> str:
        """Store `data`; return its CID (CIDv1, base32), the same in every backend."""
        ...

    def get(self, cid: str) -> bytes:
        """Return the bytes of `cid`, verified against it.

        Raises `ContentNotFoundError` when absent and `ContentMismatchError` when the bytes do
        not hash to `cid`.
        """
        ...

    def has(self, cid: str) -> bool:
        """Whether this store holds `cid` (without fetching or re-hashing it)."""
        ...


def open_storage(home: Home | None = None) -> Storage:
    """The store this process should use: the IPFS node named by `MARKET_IPFS_API` if set,
    else the embedded store in `$MARKET_HOME/storage`."""
    api = os.environ.get(IPFS_API_ENV, "").strip()
    if api:
        return IpfsStore(api)
    return EmbeddedStore((home or Home.default()).dir("storage"))


def uri_for(cid: str) -> str:
    """`ipfs://<cid>` for a valid CID (refuses a malformed one rather than writing it down)."""
    return URI_SCHEME + str(parse_cid(cid))


def cid_of_uri(uri: str) -> str:
    """The CID in `ipfs://<cid>`; a path after it, or another scheme, is refused."""
    if not isinstance(uri, str) or not uri.startswith(URI_SCHEME):
        raise InvalidUriError(f"{uri!r} is not an ipfs:// URI: expected ipfs://<cid>")
    cid = uri[len(URI_SCHEME) :].rstrip("/")
    if "/" in cid:
        raise InvalidUriError(
            f"{uri!r} names a path inside a directory; market objects are single files: "
            "expected ipfs://<cid>"
        )
    return str(parse_cid(cid))


def fetch_uri(uri: str, storage: Storage) -> bytes:
    """The verified bytes `ipfs://<cid>` names, read from `storage`."""
    return storage.get(cid_of_uri(uri))
