"""Content-addressed storage: market objects named by IPFS CIDs, verified on every read.

`open_storage()` gives the IPFS node at `$MARKET_IPFS_API` when set, else an embedded store
under `$MARKET_HOME/storage`; both compute the same CIDs (`market.storage.cid`).
See docs/storage.md.
"""

from market.storage.cid import Cid, content_matches, file_cid, parse_cid, raw_cid
from market.storage.embedded import EmbeddedStore
from market.storage.errors import (
    ContentMismatchError,
    ContentNotFoundError,
    InvalidCidError,
    IpfsDaemonError,
    IpfsUnavailableError,
    StorageError,
    UnsupportedCidError,
)
from market.storage.ipfs import IPFS_API_ENV, IpfsConfigError, IpfsStore
from market.storage.store import (
    InvalidUriError,
    Storage,
    cid_of_uri,
    fetch_uri,
    open_storage,
    uri_for,
)

__all__ = [
    "IPFS_API_ENV",
    "Cid",
    "ContentMismatchError",
    "ContentNotFoundError",
    "EmbeddedStore",
    "InvalidCidError",
    "InvalidUriError",
    "IpfsConfigError",
    "IpfsDaemonError",
    "IpfsStore",
    "IpfsUnavailableError",
    "Storage",
    "StorageError",
    "UnsupportedCidError",
    "cid_of_uri",
    "content_matches",
    "file_cid",
    "fetch_uri",
    "open_storage",
    "parse_cid",
    "raw_cid",
    "uri_for",
]
