"""The light node: a provider's side of one job.

It encodes, clips and shares its map output with `compute.round.LightNodeRound`, seals each
share to its heavy node's registered X25519 key, signs each submission with the dataset
owner's key (EIP-712) and posts it. A heavy node that does not answer is skipped (Shamir
tolerates missing holders); a refusal (4xx) is reported with the node's reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from numpy.typing import ArrayLike

from compute.budget import Spend, check, job_cost, mock_spend, retry_at
from compute.errors import ComputeError
from compute.messages import RoundConfig
from compute.policy import evaluate
from compute.randomness import Randomness, os_rng
from compute.round import LightNodeRound
from market.chain.units import format_tokens, format_utc
from market.escrow import EscrowClient, JobState, JobView
from market.escrow.documents import DocumentError, ResultDocument, fetch
from market.staking import StakingClient
from market.staking.client import HeavyNodeRecord
from market.valuation.tip.errors import TipError
from nodes.client import HeavyClient
from nodes.errors import NodeError
from nodes.evalset import EnsembleJobError
from nodes.jobs import JobSpecError, proposal_for
from nodes.kinds import node_side
from nodes.valuation import BlobCache, ValuationError
from nodes.wire import SignedSubmission, WireError, node_endpoint, refusal_detail

log = logging.getLogger("market.light")


class SubmissionRefused(NodeError):
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
                client = HeavyClient(node_endpoint(node.endpoint), self.http)
            except WireError:  # not a plain scheme://host:port: posted to nowhere else
                delivery.unreachable.append(message.recipient)
                continue
            response = self._post(client, view.job_id, body)
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

    def _post(self, client: HeavyClient, job_id: int, body: dict[str, Any]) -> Any:
        """POST a submission (`HeavyClient.submit` tries a failed connection again: a heavy
        node answers a resent submission it already holds with 200). None when the node could
        not be reached."""
        try:
            return client.submit(job_id, body)
        except requests.RequestException:
            return None


# ------------------------------------------------------------------------------ the service
class LightState:
    """What a light node decided for each (job, dataset), in SQLite: accepted and submitted,
    refused (with the policy's reasons, and the fingerprint of the policy that refused), or
    waiting for the operator's manual approval; then how a submitted job ended (settled,
    aborted, expired)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS decisions (job INTEGER, dataset TEXT, status TEXT, "
            "reason TEXT, PRIMARY KEY (job, dataset))"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
        if "policy" not in columns:  # a database from before refusals were reconsidered
            self._db.execute("ALTER TABLE decisions ADD COLUMN policy TEXT NOT NULL DEFAULT ''")
        # The privacy-budget ledger: one spend per (job, dataset), on disk (synchronous=FULL)
        # before any share of it is sent; a resend after a crash finds it and spends nothing.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spends (job INTEGER, dataset TEXT, buyer TEXT, "
            "epsilon REAL, delta REAL, rho REAL, at REAL, PRIMARY KEY (job, dataset))"
        )
        self._lock = threading.Lock()

    def spend(self, dataset: str, spend: Spend) -> bool:
        """Record `spend` for (its job, `dataset`), committed before this returns; False (and
        nothing written) if that job already spent on this dataset."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO spends (job, dataset, buyer, epsilon, delta, rho, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (spend.job, dataset, spend.buyer, spend.epsilon, spend.delta, spend.rho, spend.at),
            )
        return cursor.rowcount == 1

    def spends(self, dataset: str) -> list[Spend]:
        """Every job's spend on `dataset`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT job, buyer, epsilon, delta, rho, at FROM spends WHERE dataset = ? "
                "ORDER BY at, job",
                (dataset,),
            ).fetchall()
        return [Spend(int(j), b, float(e), float(d), r, float(a)) for j, b, e, d, r, a in rows]

    def policy_of(self, job: int, dataset: str) -> str:
        """The fingerprint of the policy under which (job, dataset) was decided ('' if none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT policy FROM decisions WHERE job = ? AND dataset = ?", (job, dataset)
            ).fetchone()
        return row[0] if row else ""

    def get(self, job: int, dataset: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT status, reason FROM decisions WHERE job = ? AND dataset = ?", (job, dataset)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def set(self, job: int, dataset: str, status: str, reason: str = "", policy: str = "") -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO decisions (job, dataset, status, reason, policy) "
                "VALUES (?, ?, ?, ?, ?)",
                (job, dataset, status, reason, policy),
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
    """`() -> fitted classifier` (`nodes.evalset.load_model`), for ensemble jobs."""
    mock_spend: tuple[float, float] | None = None
    """(epsilon, delta) its dp mock data spent (the ledger's first spend), if it has any."""
    name: str = ""
    """Its registered name (a policy's `dataset_budgets` may name it)."""


def _holds(data: LocalData) -> str:
    """What a dataset is, as a kind's `dataset` names it: a table, or a model."""
    return "table" if data.model is None else "model"


def policy_fingerprint(policy: Any) -> str:
    """A short digest of a policy's rules: a refusal is reconsidered under a policy whose
    fingerprint differs from the one that refused."""

    def normal(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: normal(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return sorted((normal(v) for v in value), key=json.dumps)
        return value

    rules = normal(policy.model_dump(mode="json"))
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:16]


FINAL = {JobState.FINALIZED: "settled", JobState.ABORTED: "aborted", JobState.EXPIRED: "expired"}
"""The status a submitted (job, dataset) takes when its job ends on chain."""


class LightService:
    """Watches the chain for jobs, applies the policy, runs the map and submits; then follows
    each submitted job to its end on chain and logs what its owner can claim."""

    def __init__(
        self,
        node: LightNode,
        datasets: list[LocalData],
        policy: Any,
        state: LightState,
        clock: Any = None,
        blobs: BlobCache | None = None,
        refresh: Any = None,
        refresh_every: float = 30.0,
    ) -> None:
        self.node = node
        self.blobs = blobs or BlobCache()
        self.datasets = datasets
        self.policy = policy
        self.fingerprint = policy_fingerprint(policy)
        self.state = state
        self.clock = clock or time.time
        self.refresh = refresh
        """`() -> list[LocalData]`: every dataset the node may serve now (staked since it
        started included); asked when a new job appears and every `refresh_every` seconds."""
        self.refresh_every = refresh_every
        self._refreshed_at = time.monotonic()
        self._jobs_seen = 0
        self._unread: set[int] = set()
        """Settled jobs whose result document could not be fetched yet (said once)."""
        self.staffing: dict[int, int] = {}
        """Open jobs whose committee is still being drawn or accepting: job id -> accept_by."""

    def _refresh(self, job_count: int) -> None:
        due = time.monotonic() >= self._refreshed_at + self.refresh_every
        if self.refresh is None or not (job_count > self._jobs_seen or due):
            return
        self._refreshed_at = time.monotonic()
        known = {d.dataset_id for d in self.datasets}
        for d in self.refresh():
            if d.dataset_id not in known:
                log.info("dataset 0x%s: staked and registered here; now serving it",
                         d.dataset_id.hex())  # fmt: skip
                self.datasets.append(d)

    def _undecided(self, job_id: int, d: LocalData) -> bool:
        """Whether (job, dataset) is still to be decided: never decided, approved by the
        operator, or refused under a policy other than the current one."""
        dataset = "0x" + d.dataset_id.hex()
        decided = self.state.get(job_id, dataset)
        if decided is None or decided[0] == "approved":
            return True
        fingerprint, _, retry = self.state.policy_of(job_id, dataset).partition("@")
        if decided[0] == "refused" and retry and self.clock() >= float(retry):
            log.info("job %s, dataset %s: refused for its privacy budget (%s); spends have left "
                     "the budget's window since, reconsidering it", job_id, dataset,
                     decided[1])  # fmt: skip
            return True
        if decided[0] == "refused" and fingerprint != self.fingerprint:
            log.info("job %s, dataset %s: refused under another policy (%s); reconsidering it "
                     "under this one", job_id, dataset, decided[1])  # fmt: skip
            return True
        return False

    def poll(self) -> list[tuple[int, str, str, str]]:
        """One pass over jobs not yet decided; returns the decisions taken in this pass."""
        escrow = self.node.escrow
        taken: list[tuple[int, str, str, str]] = []
        self.staffing = {}
        count = escrow.job_count()
        self._refresh(count)
        self._follow()
        for job_id in range(1, count + 1):
            view = escrow.job(job_id)
            if view.state is not JobState.POSTED or self.clock() > view.deadline:
                continue
            if job_id > self._jobs_seen:
                log.info("job %s: open, submissions close %s", job_id, format_utc(view.deadline))
            # Only to a committee the contract drew and whose acceptance is over: never to
            # members the buyer named, never to a member that may not take part.
            if not escrow.committee_ready(job_id):
                self.staffing[job_id] = view.accept_by
                continue
            pending = [d for d in self.datasets if self._undecided(job_id, d)]
            if not pending:
                continue
            try:
                proposal = proposal_for(escrow, view, self.blobs.allow)
            except JobSpecError as exc:
                for d in pending:
                    self._decide(taken, job_id, d, "refused", str(exc))
                continue
            decision = evaluate(self.policy, proposal, view.buyer, view.accepted)
            kind, side = proposal.job_kind, node_side(proposal)
            inputs: dict[str, Any] = {}
            # The round (and the kind's public inputs) is prepared only if a dataset here fits.
            if decision.verdict != "refuse" and any(_holds(d) == kind.dataset for d in pending):
                try:
                    inputs = side.inputs(proposal, self.blobs)
                    config = proposal.round_config(str(job_id), **inputs)
                except (ComputeError, EnsembleJobError, ValuationError) as exc:
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
                if (holds := _holds(d)) != kind.dataset:
                    reason = f"{kind.name} jobs take a {kind.dataset}; this dataset is a {holds}"
                    self._decide(taken, job_id, d, "refused", f"cannot run the map: {reason}")
                    continue
                try:
                    mapped = side.map(proposal, d, inputs, self.blobs)
                except (ComputeError, TipError, ValuationError, EnsembleJobError) as exc:
                    self._decide(taken, job_id, d, "refused", f"cannot run the map: {exc}")
                    continue
                records, payload = mapped.records, mapped.payload
                if not self._spend(taken, job_id, d, view.buyer, config):
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
                    f"{mapped.note} to heavy nodes {delivery.accepted}",
                )  # fmt: skip
        self._jobs_seen = max(self._jobs_seen, count)
        return taken

    def _spend(self, taken: list, job_id: int, d: LocalData, buyer: str, config: Any) -> bool:
        """Charge the job's (epsilon, delta) to the dataset's ledger, durably, before any share
        is sent; False (the job refused, the reason naming what is left) if it does not fit the
        policy's budget. A job that already spent here (a resend after a crash) spends nothing
        more. Without a budget, a DP job's spend is still recorded and a non-DP job's is not."""
        dataset = "0x" + d.dataset_id.hex()
        spends = self.state.spends(dataset)
        if any(s.job == job_id for s in spends):
            log.info("job %s, dataset %s: its privacy budget spent already; sending again",
                     job_id, dataset)  # fmt: skip
            return True
        plan = config.privacy
        now = float(self.clock())
        new = None if plan is None else Spend(job_id, buyer, *job_cost(plan), at=now)
        budget = self.policy.budget_for(dataset, d.name)
        if budget is not None:
            mock = mock_spend(d)
            ledger = ([mock] if mock else []) + spends
            verdict = check(budget, ledger, new, now)
            if not verdict.fits:
                again = retry_at(ledger, budget, now)
                self._decide(taken, job_id, d, "refused", "; ".join(verdict.reasons),
                             None if again is None else f"{self.fingerprint}@{again}")  # fmt: skip
                return False
        if new is not None:
            self.state.spend(dataset, new)
            log.info("job %s, dataset %s: spent epsilon %g, delta %g of its privacy budget",
                     job_id, dataset, new.epsilon, new.delta)  # fmt: skip
        return True

    def _decide(
        self,
        taken: list,
        job_id: int,
        d: LocalData,
        status: str,
        reason: str,
        policy: str | None = None,
    ) -> None:
        dataset = "0x" + d.dataset_id.hex()
        self.state.set(job_id, dataset, status, reason, policy or self.fingerprint)
        taken.append((job_id, dataset, status, reason))
        log.info("job %s, dataset %s: %s (%s)", job_id, dataset, status, reason)

    def _follow(self) -> None:
        """Each submitted job that ended on chain since the last look: logged once, with the
        payout its owner can now claim."""
        served = {"0x" + d.dataset_id.hex() for d in self.datasets}
        submitted: dict[int, list[str]] = {}
        for job_id, dataset, _, _ in self.state.all("submitted"):
            if dataset in served:
                submitted.setdefault(job_id, []).append(dataset)
        for job_id, datasets in submitted.items():
            view = self.node.escrow.job(job_id)
            if view.state not in FINAL:
                continue
            note = self._ending(view)
            if note is None:
                continue  # its result document is not readable yet: asked again next pass
            log.info("job %s: %s", job_id, note)
            for dataset in datasets:
                self.state.set(job_id, dataset, FINAL[view.state], note, self.fingerprint)

    def _ending(self, view: JobView) -> str | None:
        escrow, owner = self.node.escrow, self.node.owner.address
        if view.state is JobState.EXPIRED:
            return "expired without a result; the buyer takes its budget back"
        if view.state is JobState.ABORTED:
            event = escrow.aborted_event(view.job_id)
            return f"aborted by its committee ({event['reason'] if event else 'no reason'})"
        event = escrow.finalized_event(view.job_id)
        if view.payout_root == bytes(32) or event is None:
            return "settled with no payouts"
        endpoints = [self.node.directory[m].endpoint for m in view.committee]
        try:
            raw = fetch(event["resultURI"], endpoints, allow=self.blobs.allow)
            tree = ResultDocument.from_bytes(raw, view.result_hash).payouts
        except (DocumentError, requests.RequestException) as exc:
            if view.job_id not in self._unread:
                self._unread.add(view.job_id)
                log.warning("job %s: settled; its result document cannot be read yet (%s)",
                            view.job_id, exc)  # fmt: skip
            return None
        amount = tree.amount(owner) if tree is not None and owner in tree else 0
        if not amount:
            return f"settled; nothing to claim for {owner}"
        return f"settled: {format_tokens(amount)} claimable by {owner} (`market claim`)"
