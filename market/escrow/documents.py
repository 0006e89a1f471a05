"""The result document a committee publishes for a finalized job, and fetching documents by URI.

The document is canonical JSON (sorted keys, no spaces) whose keccak-256 is the `resultHash`
the committee signs, so anyone holding the bytes can check them against the chain:

    {"job": 7, "result": {...what the buyer asked for...},
     "payouts": <OpenZeppelin StandardMerkleTree dump> | null}

Providers find their leaf and proof in `payouts`; `market claim` verifies the tree's root
against the job's on-chain `payoutRoot` before claiming.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak

from market.errors import MarketError
from market.valuation.merkle import PayoutTree

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


class DocumentError(MarketError):
    """A document that cannot be fetched, or whose bytes do not match what the chain says."""


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class ResultDocument:
    job_id: int
    result: dict[str, Any]
    payouts: PayoutTree | None

    def to_bytes(self) -> bytes:
        return canonical_json(
            {
                "job": self.job_id,
                "result": self.result,
                "payouts": self.payouts.dump() if self.payouts is not None else None,
            }
        )

    @property
    def hash(self) -> bytes:
        return keccak(self.to_bytes())

    @classmethod
    def from_bytes(cls, raw: bytes, expected_hash: bytes | None = None) -> ResultDocument:
        """Parse `raw`; with `expected_hash` (the on-chain `resultHash`), refuse other bytes."""
        if expected_hash is not None and keccak(raw) != expected_hash:
            raise DocumentError(
                "the result document does not hash to the job's resultHash: it was altered or "
                "belongs to another job"
            )
        try:
            data = json.loads(raw)
            payouts = data["payouts"]
            return cls(
                job_id=int(data["job"]),
                result=dict(data["result"]),
                payouts=PayoutTree.load(payouts) if payouts is not None else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DocumentError(f"not a result document: {exc}") from None


CONTENT_SCHEMES = frozenset({"ipfs", "data"})
"""What every node fetches: `ipfs://<cid>` (checked against its address) and inline `data:`."""

OPERATOR_SCHEMES = ("http", "https", "file")
"""What a node's operator may allow besides (`market node heavy|light --allow-fetch SCHEME`).
A buyer who names an `http(s)://` URI makes the node request any address it can reach (its
internal services included); a `file://` URI makes it read a file on its machine."""


class FetchRefused(DocumentError):
    """A URI whose scheme this process does not fetch; the message says what to do instead."""


def _shown(uri: str) -> str:
    return uri if len(uri) <= 120 else uri[:117] + "..."


def refusal(uri: str, scheme: str) -> FetchRefused:
    shown = _shown(uri)
    if scheme == "committee":
        return FetchRefused(
            f"not fetching {shown}: a committee: URI names a finalized job's result document, "
            "served by the job's committee; a proposal or a blob must be published by content "
            "address (ipfs://<cid>)"
        )
    hint = (
        f"; or the node's operator can allow {scheme}: URIs with --allow-fetch {scheme} "
        "(`market node heavy|light`), trusting every buyer with what that reaches"
        if scheme in OPERATOR_SCHEMES
        else ""
    )
    return FetchRefused(
        f"not fetching {shown}: this node fetches only content-addressed documents "
        "(ipfs://<cid>, checked against its address) and data: URIs. The buyer should publish "
        "it by content address (`market bounty post` does; in code "
        "`market.storage.uri_for(open_storage().put(raw))`)" + hint
    )


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a scheme the caller allowed (an allowed https:// URI must not
    lead to an internal http:// one)."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in self.allowed:
            raise refusal(newurl, scheme)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _too_large(uri: str) -> DocumentError:
    return DocumentError(f"{_shown(uri)} is larger than {MAX_DOCUMENT_BYTES} bytes")


def fetch(
    uri: str, endpoints: Sequence[str] = (), timeout: float = 30.0, allow: Iterable[str] = ()
) -> bytes:
    """The bytes behind `uri`. Always fetched: `ipfs://<cid>` (content-addressed,
    `market.storage`; checked against the CID) and `data:` (inline). With `endpoints` (the
    job's committee, from the chain), `committee:/path` too: a finalized job's result
    document, served at `path` by any member (the first that answers; the caller checks the
    bytes against the on-chain hash). Any other scheme only if listed in `allow` (a node
    operator's choice among `OPERATOR_SCHEMES`): `http`, `https`, `file`; otherwise
    `FetchRefused`, saying what to do.

    Errors name the URI and what went wrong, never the bytes fetched."""
    allowed = CONTENT_SCHEMES | {s.lower() for s in allow}
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme == "committee":
        if not endpoints:
            raise refusal(uri, scheme)
        path = uri.removeprefix("committee:")
        problems = []
        for endpoint in endpoints:
            try:  # a member's endpoint, as registered on chain
                return fetch(endpoint.rstrip("/") + path, timeout=timeout, allow=("http", "https"))
            except DocumentError as exc:
                problems.append(str(exc))
        raise DocumentError(
            f"no committee member serves {path}: " + ("; ".join(problems) or "no endpoints")
        )
    if scheme not in allowed:
        raise refusal(uri, scheme)
    if scheme == "ipfs":
        from market.storage import StorageError, fetch_uri, open_storage

        try:  # the IPFS node at $MARKET_IPFS_API, else the embedded store; bytes re-hashed
            return fetch_uri(uri, open_storage())
        except StorageError as exc:
            raise DocumentError(f"cannot fetch {_shown(uri)}: {exc}") from None
    if scheme == "data":
        header, _, payload = uri[5:].partition(",")
        if header.endswith(";base64"):
            import base64
            import binascii

            try:
                return base64.b64decode(payload, validate=True)
            except binascii.Error:
                raise DocumentError("a data: URI whose payload is not base64") from None
        return urllib.parse.unquote_to_bytes(payload)
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(uri).path))
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_DOCUMENT_BYTES + 1)
        except OSError as exc:
            raise DocumentError(f"cannot read {_shown(uri)}: {exc.strerror}") from None
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise _too_large(uri)
        return raw
    if scheme in ("http", "https"):
        opener = urllib.request.build_opener(_Redirects(frozenset(allowed)))
        try:
            with opener.open(uri, timeout=timeout) as response:
                raw = response.read(MAX_DOCUMENT_BYTES + 1)
        except urllib.error.HTTPError as exc:  # the status only: not the server's words
            raise DocumentError(f"cannot fetch {_shown(uri)}: HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise DocumentError(f"cannot fetch {_shown(uri)}: {exc.reason}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise DocumentError(f"cannot fetch {_shown(uri)}: {type(exc).__name__}") from None
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise _too_large(uri)
        return raw
    raise DocumentError(f"cannot fetch {_shown(uri)}: unsupported scheme {scheme!r}")
