"""The light node: a provider's side of one job.

It encodes, clips and shares its map output with `compute.round.LightNodeRound`, seals each
share to its heavy node's registered X25519 key, signs each submission with the dataset
owner's key (EIP-712) and posts it. A heavy node that does not answer is skipped (Shamir
tolerates missing holders); a refusal (4xx) is reported with the node's reason.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from numpy.typing import ArrayLike

from compute.errors import ComputeError
from compute.maps import run_map
from compute.messages import RoundConfig
from compute.node.ensemble import EnsembleJobError, evaluation_for, model_records
from compute.node.jobs import JobSpecError, proposal_for
from compute.node.valuation import BlobCache, ValuationError, score_dataset
from compute.node.wire import SignedSubmission, WireError, node_endpoint, refusal_detail
from compute.policy import evaluate
from compute.randomness import Randomness, os_rng
from compute.round import LightNodeRound
from market.escrow import EscrowClient, JobState, JobView
from market.staking import StakingClient
from market.staking.client import HeavyNodeRecord
from market.valuation.tip.errors import TipError


class SubmissionRefused(Exception):
    """A heavy node refused a submission; the message carries its reason."""


@dataclass
class Delivery:
    """What happened to one dataset's shares in one job."""

    job_id: int
    dataset: str
    accepted: list[int] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


class Directory:
    """Heavy nodes' endpoints and keys, read from the chain once per node (a light node serving
    many datasets, or many light nodes in one process, share one)."""

    def __init__(self, staking: StakingClient) -> None:
        self.staking = staking
        self._records: dict[str, HeavyNodeRecord] = {}

    def __getitem__(self, address: str) -> HeavyNodeRecord:
        if address not in self._records:
            self._records[address] = self.staking.heavy_node(address)
        return self._records[address]


class LightNode:
    def __init__(
        self,
        owner: LocalAccount,
        escrow: EscrowClient,
        staking: StakingClient,
        http: Any = None,
        rng: Randomness | None = None,
        directory: Directory | None = None,
    ) -> None:
        self.owner = owner
        self.escrow = escrow
        self.staking = staking
        self.http = http or requests.Session()
        self.rng = rng or os_rng()
        self.directory = directory or Directory(staking)

    def submit(
        self,
        view: JobView,
        config: RoundConfig,
        dataset_id: bytes,
        records: ArrayLike,
        max_slash_bps: int = 0,
        payload: bytes = b"",
    ) -> Delivery:
        """Share `records` (the map output) and post one sealed share to each committee member
        that accepted the job (the others hold nothing of it),
        with the owner's signed consent to slashes of up to `max_slash_bps` of its stake (and,
        for a valuation job, its encrypted scores as `payload`)."""
        dataset = "0x" + dataset_id.hex()
        delivery = Delivery(view.job_id, dataset)
        shares = LightNodeRound(config, dataset).submit(records, self.rng)
        for message in shares:
            member = view.committee[message.recipient - 1]
            if member not in view.accepted:
                continue
            node = self.directory[member]
            body = SignedSubmission.create(
                self.owner,
                self.escrow.domain,
                view.job_id,
                dataset_id,
                message.recipient,
                secrets.randbits(64),
                message.share,
                node.encryption_key,
                min(max_slash_bps, view.max_slash_bps),
                payload,
                message.seed,
            ).to_json()
            try:
                url = f"{node_endpoint(node.endpoint)}/jobs/{view.job_id}/submissions"
            except WireError:  # not a plain scheme://host:port: posted to nowhere else
                delivery.unreachable.append(message.recipient)
                continue
            response = self._post(url, body)
            if response is None:
                delivery.unreachable.append(message.recipient)
                continue
            if response.status_code == 200:
                delivery.accepted.append(message.recipient)
            else:
                delivery.refused[message.recipient] = refusal_detail(response)
        if delivery.refused and not delivery.accepted:
            reasons = "; ".join(f"node {n}: {r}" for n, r in delivery.refused.items())
            raise SubmissionRefused(f"job {view.job_id} refused dataset {dataset}: {reasons}")
        return delivery

    def _post(self, url: str, body: dict[str, Any], attempts: int = 3) -> Any:
        """POST a submission; a connection that failed (refused, or closed by the node before
        it answered, as a keep-alive connection can be) is tried again, at most `attempts`
        times in all (a heavy node answers a resent submission it already holds with 200).
        None when the node could not be reached."""
        for attempt in range(attempts):
            try:
                return self.http.post(url, json=body, timeout=30, allow_redirects=False)
            except requests.ConnectionError:
                if attempt + 1 < attempts:
                    time.sleep(0.1 * 2**attempt)
            except requests.RequestException:
                return None
        return None


# ------------------------------------------------------------------------------ the service
class LightState:
    """What a light node decided for each (job, dataset), in SQLite: accepted and submitted,
    refused (with the policy's reasons), or waiting for the operator's manual approval."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS decisions (job INTEGER, dataset TEXT, status TEXT, "
            "reason TEXT, PRIMARY KEY (job, dataset))"
        )
        self._lock = threading.Lock()

    def get(self, job: int, dataset: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT status, reason FROM decisions WHERE job = ? AND dataset = ?", (job, dataset)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def set(self, job: int, dataset: str, status: str, reason: str = "") -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?)",
                (job, dataset, status, reason),
            )

    def all(self, status: str | None = None) -> list[tuple[int, str, str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT job, dataset, status, reason FROM decisions"
                + (" WHERE status = ?" if status else "")
                + " ORDER BY job, dataset",
                (status,) if status else (),
            ).fetchall()
        return [(int(j), d, s, r) for j, d, s, r in rows]


@dataclass
class LocalData:
    """A dataset this light node serves: its on-chain id and how to read its table, or, for a
    model holder, how to load its model (ensemble jobs)."""

    dataset_id: bytes
    load: Any
    """`() -> pandas.DataFrame`, read when a job needs it (the data stays here); None for a
    model."""
    model: Any = None
    """`() -> fitted classifier` (`compute.node.ensemble.load_model`), for ensemble jobs."""


class LightService:
    """Watches the chain for jobs, applies the policy, runs the map and submits."""

    def __init__(
        self,
        node: LightNode,
        datasets: list[LocalData],
        policy: Any,
        state: LightState,
        clock: Any = None,
        blobs: BlobCache | None = None,
    ) -> None:
        self.node = node
        self.blobs = blobs or BlobCache()
        self.datasets = datasets
        self.policy = policy
        self.state = state
        self.clock = clock or time.time
        self.staffing: dict[int, int] = {}
        """Open jobs whose committee is still being drawn or accepting: job id -> accept_by."""

    def poll(self) -> list[tuple[int, str, str, str]]:
        """One pass over jobs not yet decided; returns the decisions taken in this pass."""
        escrow = self.node.escrow
        taken = []
        self.staffing = {}
        for job_id in range(1, escrow.job_count() + 1):
            view = escrow.job(job_id)
            if view.state is not JobState.POSTED or self.clock() > view.deadline:
                continue
            # Only to a committee the contract drew and whose acceptance is over: never to
            # members the buyer named, never to a member that may not take part.
            if not escrow.committee_ready(job_id):
                self.staffing[job_id] = view.accept_by
                continue
            pending = [
                d
                for d in self.datasets
                if (self.state.get(job_id, "0x" + d.dataset_id.hex()) or ("", ""))[0]
                in ("", "approved")
            ]
            if not pending:
                continue
            try:
                proposal = proposal_for(escrow, view, self.blobs.allow)
            except JobSpecError as exc:
                for d in pending:
                    self._decide(taken, job_id, d, "refused", str(exc))
                continue
            decision = evaluate(self.policy, proposal, view.buyer, view.accepted)
            ensemble_job = proposal.ensemble is not None
            evaluation = None
            # The round (and an ensemble's evaluation set) is prepared only if a dataset here fits.
            if decision.verdict != "refuse" and any(
                (d.model is not None) == ensemble_job for d in pending
            ):
                try:
                    if ensemble_job:
                        evaluation = evaluation_for(proposal, self.blobs)
                        config = proposal.round_config(
                            str(job_id), validation_labels=evaluation.y_val
                        )
                    else:
                        config = proposal.round_config(str(job_id))
                except (ComputeError, EnsembleJobError) as exc:
                    for d in pending:
                        self._decide(taken, job_id, d, "refused", f"cannot take part: {exc}")
                    continue
            for d in pending:
                dataset = "0x" + d.dataset_id.hex()
                previous = self.state.get(job_id, dataset)
                approved = previous is not None and previous[0] == "approved"
                if decision.verdict == "refuse":
                    self._decide(taken, job_id, d, "refused", "; ".join(decision.reasons))
                    continue
                if decision.verdict == "manual" and not approved:
                    self._decide(taken, job_id, d, "awaiting approval", "manual approval")
                    continue
                payload = b""
                try:
                    if ensemble_job != (d.model is not None):
                        raise EnsembleJobError(
                            "an ensemble job takes a model; this dataset is a table"
                            if ensemble_job
                            else "this dataset is a model; the job needs a table"
                        )
                    if evaluation is not None:
                        records = model_records(d.model(), evaluation)
                        rows = len(evaluation.x_val) + len(evaluation.x_test)
                    elif proposal.valuation is not None:
                        scored = score_dataset(proposal, d.load(), self.blobs)
                        records, rows, payload = scored.records, scored.rows, scored.payload
                    else:
                        records, report = run_map(proposal, d.load())
                        rows = report.rows_used
                except (ComputeError, TipError, ValuationError, EnsembleJobError) as exc:
                    self._decide(taken, job_id, d, "refused", f"cannot run the map: {exc}")
                    continue
                try:
                    delivery = self.node.submit(
                        view, config, d.dataset_id, records, self.policy.max_slash_bps, payload
                    )
                except SubmissionRefused as exc:
                    self._decide(taken, job_id, d, "refused by committee", str(exc))
                    continue
                self._decide(
                    taken, job_id, d, "submitted",
                    ("probabilities on " if evaluation is not None else "")
                    + f"{rows} rows to heavy nodes {delivery.accepted}",
                )  # fmt: skip
        return taken

    def _decide(self, taken: list, job_id: int, d: LocalData, status: str, reason: str) -> None:
        dataset = "0x" + d.dataset_id.hex()
        self.state.set(job_id, dataset, status, reason)
        taken.append((job_id, dataset, status, reason))
