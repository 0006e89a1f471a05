"""The result document a committee publishes for a finalized job, and fetching documents by URI.

The document is canonical JSON (sorted keys, no spaces) whose keccak-256 is the `resultHash`
the committee signs, so anyone holding the bytes can check them against the chain:

    {"job": 7, "result": {...what the buyer asked for...},
     "payouts": <OpenZeppelin StandardMerkleTree dump> | null}

Providers find their leaf and proof in `payouts`; `market claim` verifies the tree's root
against the job's on-chain `payoutRoot` before claiming.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak

from market.valuation.merkle import PayoutTree

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


class DocumentError(Exception):
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


def fetch(uri: str, endpoints: Sequence[str] = (), timeout: float = 30.0) -> bytes:
    """The bytes behind `uri`: `ipfs://<cid>` (content-addressed, `market.storage`; checked
    against the CID), `data:` (inline), `file://`, `http://`, `https://`, or
    `committee:/path`, served at `path` by any of the job's committee `endpoints` (the first
    that answers; the caller checks the bytes against the on-chain hash)."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "committee":
        path = uri.removeprefix("committee:")
        problems = []
        for endpoint in endpoints:
            try:
                return fetch(endpoint.rstrip("/") + path, timeout=timeout)
            except DocumentError as exc:
                problems.append(str(exc))
        raise DocumentError(
            f"no committee member serves {path}: " + ("; ".join(problems) or "no endpoints")
        )
    if scheme == "ipfs":
        from market.storage import StorageError, fetch_uri, open_storage

        try:  # the IPFS node at $MARKET_IPFS_API, else the embedded store; bytes re-hashed
            return fetch_uri(uri, open_storage())
        except StorageError as exc:
            raise DocumentError(f"cannot fetch {uri}: {exc}") from None
    if scheme == "data":
        header, _, payload = uri[5:].partition(",")
        if header.endswith(";base64"):
            import base64

            return base64.b64decode(payload)
        return urllib.parse.unquote_to_bytes(payload)
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(uri).path))
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DocumentError(f"cannot read {uri}: {exc.strerror}") from None
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri, timeout=timeout) as response:  # noqa: S310
                raw = response.read(MAX_DOCUMENT_BYTES + 1)
        except OSError as exc:
            raise DocumentError(f"cannot fetch {uri}: {exc}") from None
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise DocumentError(f"{uri} is larger than {MAX_DOCUMENT_BYTES} bytes")
        return raw
    raise DocumentError(f"cannot fetch {uri!r}: unsupported scheme {scheme!r}")
