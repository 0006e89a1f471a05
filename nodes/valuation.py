"""Valuation (TIP) jobs at the edges of the network: what a provider's light node computes, and
how the buyer collects, decrypts and reports the scores. The heavy node's side is in
`nodes.heavy` (it stores the encrypted scores with each submission, serves them to the
buyer after the round, and settles on the buyer's signed report).

A provider fetches the job's three published blobs (model release, public CKKS context,
`Enc(q)`), each checked against the SHA-256 and size the proposal states, and scores the rows its
map selects; its rows and gradients never leave it. The buyer, after the deadline, asks any
committee member for the agreed participants, fetches each one's encrypted scores, decrypts them
with the secret key only it holds, and posts one signed report of the totals to every member.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import requests
from eth_account.signers.local import LocalAccount

from compute.maps import run_map, select_rows
from compute.proposal import BlobRef, Proposal
from market.escrow.documents import DocumentError, fetch
from market.valuation.tip.he import BuyerContext
from market.valuation.tip.job import TipTerms
from market.valuation.tip.release import ScoreReport, report_from_payloads, score_rows
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
    """The map's records (one per row scored): the secret-shared row count."""
    payload: bytes
    """The encrypted scores, one per row, for every committee member."""
    rows: int


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
    payload = score_rows(
        TipTerms.from_json(spec.tip),
        blobs.get(spec.model),
        blobs.get(spec.context),
        blobs.get(spec.query),
        rows.loc[:, list(spec.features)].to_numpy(dtype=np.float64),
        rows.loc[:, spec.label].to_numpy(),
    )
    return Scored(run_map(proposal, frame).records, payload, len(rows))


# ------------------------------------------------------------------------------ the buyer
class NotReady(ValuationError):
    """The committee has not agreed on the participants yet (or the job aborted)."""


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


def report_scores(
    buyer: LocalAccount,
    context: BuyerContext,
    job_id: int,
    endpoints: Sequence[str],
    http: Any = None,
) -> tuple[ScoreReport, dict[str, np.ndarray], dict[int, str]]:
    """Decrypt a valuation job's scores and report the totals to every committee member.

    Returns the report, each participant's per-row scores (they stay with the buyer), and the
    members that refused or did not answer (index from 1 -> reason). Raises `NotReady` before
    the committee has agreed on the participants."""
    http = http or requests.Session()
    status = _get(http, endpoints, api.valuation(job_id)).json()
    payloads = {
        dataset: _get(http, endpoints, api.payload(job_id, dataset)).content
        for dataset in status["participants"]
    }
    report, per_row = report_from_payloads(job_id, context, payloads)
    body = {"report": report.to_json(), "signature": wire.sign_payload(buyer, report.to_json())}
    failed: dict[int, str] = {}
    for index, endpoint in enumerate(endpoints, start=1):
        try:
            response = HeavyClient(endpoint, http).scores(job_id, body)
        except requests.RequestException as exc:
            failed[index] = type(exc).__name__
            continue
        if response.status_code != 200:
            failed[index] = wire.refusal_detail(response)
    if len(failed) == len(endpoints):
        raise ValuationError(
            f"no committee member took the report of job {job_id}: "
            + "; ".join(f"node {i}: {r}" for i, r in failed.items())
        )
    return report, per_row, failed


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
