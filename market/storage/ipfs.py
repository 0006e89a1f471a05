"""The IPFS backend: a real IPFS node (Kubo or the JS node) through its HTTP RPC API.

It talks through `ipfshttpclient.client.Client`, built directly: the package's `connect()` checks
the daemon's version against a list that stops at Kubo 0.8 and refuses everything newer, while
the calls used here (`add`, `cat`, `pin/ls`) have kept their shape on every daemon since.

`put` adds with `cid-version=1` and `raw-leaves=true` (and pins), so the node stores the same
DAG the embedded store addresses, and the CID it answers is checked against the one computed
here. `get` re-hashes what `cat` returns: the node is trusted for availability, never for
integrity.
"""

from __future__ import annotations

import io
import ipaddress
import urllib.parse
import warnings
from typing import Any

import ipfshttpclient.exceptions as ipfs_errors
from ipfshttpclient.client import Client
from ipfshttpclient.http_common import multiaddr_to_url_data

from market.storage.cid import content_matches, file_cid, parse_cid
from market.storage.errors import (
    ContentMismatchError,
    ContentNotFoundError,
    IpfsUnavailableError,
    StorageError,
)

# ipfshttpclient 0.7 passes urllib3 a `strict=True` that urllib3 2.x ignores and warns about on
# every connection pool; the warning says nothing a user of this package can act on.
warnings.filterwarnings(
    "ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning
)

IPFS_API_ENV = "MARKET_IPFS_API"

DEFAULT_FETCH_TIMEOUT = 60.0
"""Seconds the node may spend finding content (locally or on the network) before `get` gives up."""

_CONNECT_TIMEOUT = 10.0


class IpfsConfigError(StorageError, ValueError):
    """`MARKET_IPFS_API` (or the address given) is neither a multiaddr nor an http(s) URL."""


def api_multiaddr(api: str) -> str:
    """The API address as the multiaddr the client takes; accepts a multiaddr or an http URL.

    `/ip4/127.0.0.1/tcp/5001/http` (what Kubo's `api` file and config hold) passes through;
    `http://127.0.0.1:5001` (what people paste from a browser) becomes that multiaddr. A URL
    path of `/api/v0` is the RPC prefix the client adds itself, so it is dropped.
    """
    text = api.strip()
    if text.startswith("/"):
        try:
            multiaddr_to_url_data(text, "api/v0")
        except ipfs_errors.AddressError as exc:
            raise IpfsConfigError(
                f"{IPFS_API_ENV}={api!r} is not an IPFS API multiaddr: expected e.g. "
                "/ip4/127.0.0.1/tcp/5001/http or http://127.0.0.1:5001"
            ) from exc
        return text
    url = urllib.parse.urlsplit(text)
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme not in ("http", "https") or not url.hostname or port is None:
        raise IpfsConfigError(
            f"{IPFS_API_ENV}={api!r} is not an IPFS API address: give an http URL with a port "
            "(http://127.0.0.1:5001) or a multiaddr (/ip4/127.0.0.1/tcp/5001/http)"
        )
    if url.path.rstrip("/") not in ("", "/api/v0") or url.query or url.fragment:
        raise IpfsConfigError(
            f"{IPFS_API_ENV}={api!r}: give the API's address only, e.g. http://127.0.0.1:5001"
        )
    try:
        proto = f"ip{ipaddress.ip_address(url.hostname).version}"
    except ValueError:
        proto = "dns"
    return f"/{proto}/{url.hostname}/tcp/{port}/{url.scheme}"


def api_url(api: str) -> str:
    """The API's base URL for messages (`http://127.0.0.1:5001`), from either address form."""
    addr = api_multiaddr(api)
    url, _uds, _family, _numeric = multiaddr_to_url_data(addr, "")
    return str(url).rstrip("/")


class IpfsStore:
    """Content on an IPFS node, addressed and verified exactly as `EmbeddedStore` does."""

    def __init__(self, api: str, fetch_timeout: float = DEFAULT_FETCH_TIMEOUT) -> None:
        self.api = api_multiaddr(api)
        self.url = api_url(api)
        self.fetch_timeout = fetch_timeout
        # The HTTP timeout leaves the node room to report its own fetch timeout as an error.
        self._client = Client(self.api, timeout=(_CONNECT_TIMEOUT, fetch_timeout + 10))

    def __repr__(self) -> str:
        return f"IpfsStore({self.api!r})"

    def put(self, data: bytes) -> str:
        """Add and pin `data` on the node; return its CID, checked against the one computed here."""
        data = bytes(data)
        expected = str(file_cid(data))
        reply = self._call(
            "add",
            lambda: self._client.add(
                io.BytesIO(data),
                cid_version=1,
                raw_leaves=True,
                pin=True,
                opts={"cid-base": "base32"},
            ),
        )
        answered = str(reply.get("Hash", ""))
        if answered != expected:
            raise ContentMismatchError(
                f"the IPFS node at {self.url} stored {len(data)} bytes as {answered!r}, but their "
                f"CID is {expected}: its add settings differ from IPFS's defaults (chunker "
                "size-262144, balanced layout); use a node with the default import settings"
            )
        return expected

    def get(self, cid: str) -> bytes:
        """The bytes of `cid` from the node (or through it, from the network), re-hashed here."""
        parsed = parse_cid(cid)
        try:
            data = self._client.cat(str(parsed), opts={"timeout": f"{self.fetch_timeout:g}s"})
        except ipfs_errors.ErrorResponse as exc:
            if _means_absent(str(exc)):
                raise ContentNotFoundError(
                    f"the IPFS node at {self.url} found no content {cid} within "
                    f"{self.fetch_timeout:g} s: add it to that node, or check that a peer "
                    "that has it is reachable"
                ) from exc
            raise self._unavailable("cat", exc) from exc
        except ipfs_errors.Error as exc:
            raise self._unavailable("cat", exc) from exc
        if not content_matches(parsed, bytes(data)):
            raise ContentMismatchError(
                f"the IPFS node at {self.url} returned {len(data)} bytes for {cid} that do not "
                "hash to it: do not trust that node's copy; fetch the content from another node"
            )
        return bytes(data)

    def has(self, cid: str) -> bool:
        """Whether the node has `cid` pinned: kept locally and safe from its garbage collector.

        Pins rather than "any block the node can find": asking for an absent block makes a
        node search the network until a timeout, and `has` must answer at once.
        """
        parsed = parse_cid(cid)
        try:
            reply = self._client.pin.ls(str(parsed), type="recursive")
        except ipfs_errors.ErrorResponse as exc:
            if "not pinned" in str(exc):
                return False
            raise self._unavailable("pin/ls", exc) from exc
        except ipfs_errors.Error as exc:
            raise self._unavailable("pin/ls", exc) from exc
        return bool(reply.get("Keys"))

    def version(self) -> str:
        """The node's version string (e.g. '0.18.1' for the JS node, '0.29.0' for Kubo)."""
        reply = self._call("version", self._client.version)
        return str(reply.get("Version", "?"))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> IpfsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, call: Any) -> Any:
        try:
            return call()
        except ipfs_errors.Error as exc:
            raise self._unavailable(what, exc) from exc

    def _unavailable(self, what: str, exc: Exception) -> IpfsUnavailableError:
        if isinstance(exc, ipfs_errors.ConnectionError):
            return IpfsUnavailableError(
                f"the IPFS API at {self.url} does not answer: start the node (`ipfs daemon`), "
                f"or set {IPFS_API_ENV} to its API address, or unset {IPFS_API_ENV} to use the "
                "embedded store"
            )
        if isinstance(exc, ipfs_errors.TimeoutError):
            return IpfsUnavailableError(
                f"the IPFS API at {self.url} did not answer `{what}` in time: check that the "
                f"node is healthy, or unset {IPFS_API_ENV} to use the embedded store"
            )
        return IpfsUnavailableError(
            f"the IPFS node at {self.url} refused `{what}`: {_first_line(exc)} "
            f"(is {IPFS_API_ENV} the node's RPC API, not its gateway?)"
        )


def _means_absent(message: str) -> bool:
    lowered = message.lower()
    return any(
        hint in lowered
        # The JS node says "request timed out"; Kubo "context deadline exceeded".
        for hint in ("timed out", "deadline exceeded", "not found", "could not resolve")
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
