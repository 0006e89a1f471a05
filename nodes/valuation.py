"""Valuation (TIP) jobs at the edges of the network: what a provider's light node computes, and
what the buyer sends and reads. The heavy node's side is in `nodes.heavy` (it stores each
submission's encrypted scores, opens each participant's total influence in the round with the
buyer's shared query, settles on those totals, and serves the encrypted scores to the buyer).

A provider fetches the job's three published blobs (model release, public CKKS context,
`Enc(q)`), each checked against the SHA-256 and size the proposal states, and takes the rows
its map selects; it shares their summed projected gradient `G_p` with the committee and sends
their scores encrypted under the buyer's key; its rows and gradients never leave it.

The buyer commits to its shares of `q` in the proposal (`committee_terms`, at publishing), and
after posting seals each committee member's share to that member's registered key and posts
them all as the job's late input (`send_query`). After the round it may fetch and decrypt the
participants' per-row scores for its own insight (`fetch_scores`); they never touch the payouts.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import requests
from eth_account.signers.local import LocalAccount
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from compute import products
from compute.maps import select_rows
from compute.products import SharedQuery
from compute.proposal import BlobRef, Proposal
from market.escrow.documents import DocumentError, fetch
from market.valuation.tip.he import BuyerContext
from market.valuation.tip.job import TipTerms
from market.valuation.tip.release import score_and_sum_rows
from nodes import api, wire
from nodes.client import HeavyClient
from nodes.errors import NodeError


class ValuationError(NodeError):
    """A valuation job step that cannot go on; the message says what to do."""


class BlobCache:
    """The job's published blobs, fetched once each and checked against the proposal.

    Fetched by content-addressed `ipfs://` or `data:` URIs, and by the schemes in `allow`
    (the operator's `--allow-fetch`: `http`, `https`, `file`); the node's proposals are fetched
    under the same `allow`. A refusal never quotes what a URI served."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow = frozenset(s.lower() for s in allow)
        self._blobs: dict[str, bytes] = {}

    def get(self, ref: BlobRef) -> bytes:
        if ref.sha256 not in self._blobs:
            try:
                raw = fetch(ref.uri, allow=self.allow)
            except DocumentError as exc:
                raise ValuationError(str(exc)) from None
            if len(raw) != ref.size or hashlib.sha256(raw).hexdigest() != ref.sha256:
                raise ValuationError(
                    f"{ref.uri} does not hold the blob the proposal names (size or SHA-256 "
                    "differ); the buyer must publish it unchanged"
                )
            self._blobs[ref.sha256] = raw
        return self._blobs[ref.sha256]


@dataclass(frozen=True)
class Scored:
    """A provider's contribution to a valuation job."""

    records: np.ndarray
    """One record: the rows' summed projected gradient `G_p`, which it shares."""
    payload: bytes
    """The encrypted scores, one per row, for every committee member (the buyer's view)."""
    rows: int
    clipped: int = 0
    """Coordinates of `G_p` beyond the job's encoding bound (`compute.products.G_BOUND` at
    `2^g_bits`), which the shared contribution clips."""


def score_dataset(proposal: Proposal, frame: pd.DataFrame, blobs: BlobCache) -> Scored:
    """Run a valuation job's map over a provider's table: the rows the filter keeps (with no
    missing feature or label), scored under the buyer's key."""
    spec = proposal.valuation
    if spec is None:
        raise ValuationError("not a valuation job")
    rows, _ = select_rows(proposal, frame)
    if len(rows) == 0:
        raise ValuationError("no rows to score after the job's filter")
    if len(rows) > spec.max_examples:
        raise ValuationError(
            f"{len(rows)} rows to score; the job takes at most {spec.max_examples} per provider"
        )
    payload, gradient = score_and_sum_rows(
        TipTerms.from_json(spec.tip),
        blobs.get(spec.model),
        blobs.get(spec.context),
        blobs.get(spec.query),
        rows.loc[:, list(spec.features)].to_numpy(dtype=np.float64),
        rows.loc[:, spec.label].to_numpy(),
    )
    _, clipped = products.encode_gradient(gradient, spec.committee.g_bits)
    return Scored(gradient.reshape(1, -1), payload, len(rows), clipped)


# ------------------------------------------------------------------------------ the buyer
class NotReady(ValuationError):
    """The committee has not opened the totals yet (or the job aborted)."""


def _get(http: Any, endpoints: Sequence[str], path: str) -> Any:
    problems = []
    for endpoint in endpoints:
        try:
            response = HeavyClient(endpoint, http).get(path)
        except requests.RequestException as exc:
            problems.append(f"{endpoint}: {type(exc).__name__}")
            continue
        if response.status_code == 200:
            return response
        problems.append(f"{endpoint}: {response.status_code} {wire.refusal_detail(response)}")
        if response.status_code == 409:
            raise NotReady(wire.refusal_detail(response))
    raise ValuationError(f"no committee member serves {path}: " + "; ".join(problems))


def committee_terms(
    q: Any, largest_gradient: float, n: int, t: int, rng: Any
) -> tuple[dict[str, Any], SharedQuery]:
    """The proposal's `valuation.committee` terms for query `q` (floats) shared t-of-n, and the
    shares the buyer keeps until it posts them (`send_query`). `largest_gradient`: the largest
    coordinate of a provider's summed gradient the buyer expects (`G_p` is clipped beyond)."""
    q_bits = products.query_bits(q)
    g_bits = max(products.gradient_bits(largest_gradient), 0)
    shared = products.share_query(products.encode_query(q, q_bits), n, t, rng)
    terms = {"q_bits": q_bits, "g_bits": g_bits, "commitments": shared.commitments()}
    return terms, shared


def seal_query(job_id: int, shared: SharedQuery, keys: Sequence[bytes]) -> dict[str, Any]:
    """The late input `query`: each committee position's nonce and share sealed to that
    member's registered box key (committee order)."""
    if len(keys) != len(shared.nonces):
        raise ValuationError(
            f"{len(shared.nonces)} query shares for a committee of {len(keys)}; publish the "
            "query for this committee's size"
        )
    sealed = []
    for nonce, share, key in zip(shared.nonces, shared.shares, keys, strict=True):
        plain = nonce + np.ascontiguousarray(share, dtype="<u8").tobytes()
        sealed.append(base64.b64encode(SealedBox(PublicKey(key)).encrypt(plain)).decode())
    return {"job_id": job_id, "shares": sealed}


def open_query_share(proposal: Proposal, value: Any, index: int, key: PrivateKey) -> np.ndarray:
    """A member's own share of the buyer's query, opened with its box key and checked against
    the proposal's commitment for its position; `ValuationError` otherwise."""
    spec = proposal.valuation
    k = int(spec.tip["projection"]["k"])
    try:
        plain = SealedBox(key).decrypt(base64.b64decode(value.shares[index - 1], validate=True))
    except (IndexError, ValueError, CryptoError):
        raise ValuationError(
            f"the query share for member {index} is missing or not sealed to its key"
        ) from None
    nonce, raw = plain[: products.NONCE_BYTES], plain[products.NONCE_BYTES :]
    if len(raw) != 8 * k:
        raise ValuationError(f"the query share for member {index} is not {k} field elements")
    share = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
    try:
        products.check_share(spec.committee.commitments, index, nonce, share, k)
    except products.ProductError as exc:
        raise ValuationError(str(exc)) from None
    return share


def send_query(
    buyer: LocalAccount,
    job_id: int,
    shared: SharedQuery,
    keys: Sequence[bytes],
    endpoints: Sequence[str],
    http: Any = None,
) -> dict[int, str]:
    """Seal and post the query shares to every committee member (`nodes.late.post`); the
    members that refused or did not answer (index from 1 -> reason)."""
    from nodes import late

    return late.post(buyer, job_id, "query", seal_query(job_id, shared, keys), endpoints, http)


def fetch_scores(
    context: BuyerContext, job_id: int, endpoints: Sequence[str], http: Any = None
) -> dict[str, np.ndarray]:
    """The buyer's own view: each participant's per-row scores, decrypted with its secret
    context. Raises `NotReady` before the committee opened the totals."""
    http = http or requests.Session()
    status = _get(http, endpoints, api.valuation(job_id)).json()
    return {
        dataset: context.decrypt_scores(_get(http, endpoints, api.payload(job_id, dataset)).content)
        for dataset in status["participants"]
    }


# ------------------------------------------------------------------------------ publishing
def publish_blobs(publication: Any, storage: Any) -> dict[str, BlobRef]:
    """Put a `tip.release.Publication`'s public blobs (model, context, query) in content-
    addressed `storage` (`market.storage.Storage`) and return their references for the
    proposal (`ipfs://` URIs, each with its SHA-256 and size)."""
    from market.storage import uri_for

    refs = {}
    for name in ("model", "context", "query"):
        raw: bytes = getattr(publication, name)
        refs[name] = BlobRef(
            uri=uri_for(storage.put(raw)), sha256=hashlib.sha256(raw).hexdigest(), size=len(raw)
        )
    return refs
