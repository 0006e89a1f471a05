"""The heavy node: a FastAPI service that collects sealed shares for the jobs whose committee it
sits on, runs the aggregation round with its peers after the deadline, and settles on chain.

The round itself is `compute.round.HeavyNodeRound` (sans-I/O); this module is its driver:
HTTP in (light nodes' submissions, peers' messages and signatures), HTTP out (to peers), the
chain (jobs, stakes, committee endpoints and keys, finalize/abort), SQLite (everything received,
before it is acknowledged) and the clock (deadline, peer timeouts).

Jobs: nobody names a committee. When a job is posted, any node draws its committee on chain
(`drawCommittee`, seeded by a block hash the buyer could not know); a drawn node reads the job's
proposal and accepts it on chain (`acceptJob`) only if it can serve it and its fee share is at
least the operator's `min_fee`, so a job it cannot serve never costs it a liveness penalty. It
builds a job's state only from its own look at the chain (never because a request names a job),
and members that did not accept are peers it does not wait for.

Settlement: every honest member reconstructs the same aggregate, so each derives the same result
document (`market.escrow.documents.ResultDocument`: the decoded result and the payout tree) and
the same EIP-712 `Result`, signs it once (`nodes.settle`: recorded in the store before it
is signed, never a second digest for a job) and sends the signature to its peers; any member
holding a quorum of valid signatures calls `finalize` with every one it holds
(`compute.settlement` decides what to submit, when to retry and when to give up). Below the
participant minimum, or with a peer caught cheating, the round aborts and the members sign and
submit `abort` the same way, which refunds the buyer in full. A peer's signature counts only if
the contract would take it. The result document is served once the chain has finalized it.

Restarts: every input (submissions, peer messages and signatures) and every decision that
changes what the node would sign (closing submissions, giving up on a peer) is logged in the
store before the node acts on it, and replayed in that order (`nodes.store`).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from compute.dp import sample_noise
from compute.economics import fee_share
from compute.errors import ComputeError, DuplicateSubmissionError, LateSubmissionError
from compute.kinds import ValuationSpec
from compute.messages import (
    CloseSubmissions,
    Outgoing,
    PeerUnavailable,
    RoundConfig,
    Submission,
)
from compute.messages import Result as RoundResult
from compute.randomness import AesCtrRandom
from compute.reduce import Abort
from compute.round import HeavyNodeRound
from compute.settlement import (
    ConflictingSignatureError,
    Kind,
    Phase,
    SignatureRefusedError,
    Signed,
    TooManyDigestsError,
)
from market.chain import Chain, Deployment
from market.chain import errors as E
from market.chain.units import format_utc
from market.escrow import EscrowClient, JobState, JobView
from market.escrow.eip712 import (
    InvalidSignature,
    abort_digest,
    recover_strict,
    result_digest,
)
from market.keys import box_private_key
from market.staking import StakingClient
from market.staking.view import StakeView
from market.valuation.tip.errors import TipError
from market.valuation.tip.job import TipTerms
from market.valuation.tip.release import scores_count
from nodes import api, results, wire
from nodes.client import HeavyClient
from nodes.errors import (
    BadRequest,
    Conflict,
    FeeTooLow,
    Forbidden,
    Malformed,
    NotFound,
    Rejected,
    TooMany,
    Unauthenticated,
    Unavailable,
)
from nodes.late import LateFor, LateTerms
from nodes.late import parse as parse_late
from nodes.settle import Decision, JobSettlement, Settler, result_from_json, result_json
from nodes.store import Duplicate, Entry, Input, Store

log = logging.getLogger("market.heavy")


def _describe(decision: Decision) -> str:
    if decision.result is not None:
        return f"the result over {decision.result.participants} participants"
    return f"an abort ({decision.reason})"


ConfigFor = Callable[[JobView], RoundConfig]
"""How a node learns a job's round configuration (from its proposal)."""
ValuationFor = Callable[[JobView], ValuationSpec | None]
"""How a node learns a valuation job's TIP terms (None for other kinds)."""


@dataclass
class _Job:
    view: JobView
    index: int
    config: RoundConfig
    round: HeavyNodeRound
    settlement: JobSettlement
    closed_at: float | None = None
    heard: set[int] = field(default_factory=set)
    outbox: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    """(peer index, path, body) still to deliver."""
    endpoints: dict[int, str] = field(default_factory=dict)
    valuation: ValuationSpec | None = None
    backend: str = ""
    """A valuation job's HE backend (its TIP terms, checked when the job is first seen)."""
    missing: set[int] = field(default_factory=set)
    """Peers this node gave up on: not among the members that agreed on the participants."""
    commits: dict[int, set[bytes]] = field(default_factory=dict)
    """The members (index) -> the digests of the late inputs each took as its own (its first
    one; more than one only from a faulty member)."""
    late: LateTerms | None = None
    """The kind's late input (a forecast's outcomes), which the round waits for."""
    resolved: bool = False
    """The round took the late input every accepted member committed to (`_resolve`)."""
    proposal: Any = None
    """The job's proposal, when the node reads proposals (its kind settles the result)."""


class HeavyNode:
    def __init__(
        self,
        account: LocalAccount,
        chain: Chain,
        deployment: Deployment,
        store: Store,
        config_for: ConfigFor,
        *,
        clock: Callable[[], float] = time.time,
        peer_timeout: float = 15.0,
        http: Any = None,
        valuation_for: ValuationFor | None = None,
        late_for: LateFor | None = None,
        min_fee: int = 0,
        escrow: EscrowClient | None = None,
        staking: StakingClient | None = None,
        stakes: StakeView | None = None,
        discover_every: float = 1.0,
    ) -> None:
        """`escrow`, `staking` and `stakes` default to clients of `deployment` on `chain`; tests
        pass plain in-memory ones instead."""
        self.account = account
        self.address = account.address
        self.chain = chain
        self.escrow = escrow or EscrowClient(chain, deployment)
        self.staking = staking or StakingClient(chain, deployment)
        self.store = store
        self.config_for = config_for
        self.valuation_for = valuation_for
        self.late_for = late_for if late_for is not None else getattr(config_for, "late", None)
        """A job's late input (by default `JobSpecs.late`, when the node reads proposals)."""
        self.proposal_for = getattr(config_for, "proposal", None)
        self.clock = clock
        self.peer_timeout = peer_timeout
        self.min_fee = min_fee
        """The smallest fee share (token base units) for which this node accepts a job."""
        self.http = http or requests.Session()
        self.stakes = stakes or StakeView(self.staking)
        """Every dataset's stake, kept current from the chain's events (synced before a job is
        served, when a submission names a dataset it does not know, and at settlement)."""
        self._box = box_private_key(account)
        self._jobs: dict[int, _Job] = {}
        self._watching: set[int] = set()
        """Posted jobs whose committee is not drawn yet, or drawn with this node not accepted."""
        self._seen = 0
        """Jobs up to this id have been looked at (a refused job is never looked at again)."""
        self._next_discovery = 0.0
        self.discover_every = discover_every
        """Seconds between looks at the chain for jobs to draw, accept and serve."""
        self._lock = threading.RLock()
        self.settler = Settler(account, self.escrow, store, self._lock)
        self._finalized: set[int] = set()
        """Jobs whose finalization on chain (of this node's result) has been seen."""
        self._looked_at = -1
        """The block of the last look at the chain's jobs."""
        self._looked = threading.Event()
        """Set once the node has looked at the chain's jobs since it started."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------- jobs
    def job(self, job_id: int) -> _Job:
        """This node's state for a job it serves. A request never makes the node fetch or
        build anything: a job it has not taken on (yet) is refused."""
        with self._lock:
            if job_id in self._jobs:
                return self._jobs[job_id]
        if not self._looked.is_set():  # still rebuilding its jobs after a (re)start: retry
            raise Unavailable(f"this heavy node is starting; retry job {job_id} shortly")
        raise NotFound(f"this heavy node does not serve job {job_id} (or has not yet "
                       "accepted it on chain)")  # fmt: skip

    def _open(self, view: JobView) -> _Job:
        """Build (and rebuild from the store) this node's state for a job it accepted or is
        about to accept; `Rejected` when its proposal cannot be served."""
        job_id = view.job_id
        with self._lock:
            if job_id in self._jobs:
                return self._jobs[job_id]
            self.stakes.sync()  # every stake change up to (at least) the job's posting block
            try:
                config = self.config_for(view)
                valuation = self.valuation_for(view) if self.valuation_for else None
                backend = TipTerms.from_json(valuation.tip).backend if valuation else ""
                late = self.late_for(view) if self.late_for else None
                proposal = self.proposal_for(view) if self.proposal_for else None
            except Exception as exc:  # an unfetchable, invalid or contradictory proposal
                raise Conflict(f"this node cannot serve job {job_id}: {exc}") from None
            index = view.committee.index(self.address) + 1
            rng = AesCtrRandom(self.store.job_key(job_id))
            sampler = None
            if config.privacy is not None:
                plan = config.privacy

                def sampler() -> np.ndarray:
                    raw = self.store.noise(
                        job_id, lambda: sample_noise(plan).astype("<i8").tobytes()
                    )
                    return np.frombuffer(raw, dtype="<i8").astype(np.int64)

            round_ = HeavyNodeRound(config, index, rng, sampler)
            job = _Job(view, index, config, round_, self.settler.open(view))
            job.valuation, job.backend = valuation, backend
            job.late, job.proposal = late, proposal
            self._jobs[job_id] = job
            self._replay(job)
            decision, signature = job.settlement.decision, job.settlement.machine.signature
            if decision is not None and signature is not None:
                self._send_signature(job, decision, signature)  # lost in a crash, maybe
            return job

    def _replay(self, job: _Job) -> None:
        """Feed back the job's input log in its order (after a restart, the node continues
        where it was: the same round, the same outcome)."""
        for entry in self.store.inputs(job.view.job_id):
            try:
                self._replay_one(job, entry)
            except ComputeError as exc:  # taken before the restart; cannot differ now
                log.warning("job %s: replaying %s %s: %s", job.view.job_id, entry.kind,
                            entry.key, exc)  # fmt: skip

    def _replay_one(self, job: _Job, entry: Entry) -> None:
        job_id = str(job.view.job_id)
        if entry.kind is Input.SUBMISSION:
            assert entry.blob is not None
            share = np.frombuffer(entry.blob, "<u8")
            job.round.handle(Submission(job_id, entry.key, job.index, share))
        elif entry.kind is Input.PEER:
            job.heard.add(int(entry.body["sender"]))
            self._deliver(job, wire.peer_message(entry.body))
        elif entry.kind is Input.CLOSE:
            job.closed_at = float(entry.body["at"])
            self._deliver(job, CloseSubmissions(job_id))
        elif entry.kind is Input.GIVE_UP:
            job.heard.add(int(entry.key))
            job.missing.add(int(entry.key))
            self._deliver(job, PeerUnavailable(job_id, int(entry.key)))
        elif entry.kind is Input.COMMIT:
            member, digest = entry.key.split(":")
            job.commits.setdefault(int(member), set()).add(bytes.fromhex(digest))
            self._resolve(job)
        elif entry.kind is Input.LATE:
            self._resolve(job)
        else:
            self.settler.replay(job.settlement, entry)

    def _deliver(self, job: _Job, event: Any) -> None:
        for message in job.round.handle(event):
            self._queue(job, message)

    def _queue(self, job: _Job, message: Outgoing) -> None:
        payload = wire.peer_payload(message)
        body = {"payload": payload, "signature": wire.sign_payload(self.account, payload)}
        job.outbox.append((message.recipient, api.peer(job.view.job_id), body))

    # ------------------------------------------------------------------------- HTTP handlers
    def accept_submission(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        arrived = self.stakes.clock()
        job = self.job(job_id)
        try:
            sub = wire.SignedSubmission(
                job_id=int(body["job"]),
                dataset_id=bytes.fromhex(str(body["dataset"]).removeprefix("0x")),
                recipient=int(body["recipient"]),
                nonce=int(body["nonce"]),
                sealed=base64.b64decode(body["sealed"], validate=True),
                signature=bytes.fromhex(str(body["signature"]).removeprefix("0x")),
                participation_bps=int(body["participation_bps"]),
                participation=bytes.fromhex(str(body["participation"]).removeprefix("0x")),
                payload=base64.b64decode(body.get("payload") or "", validate=True),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise Malformed(f"malformed submission: {exc}") from None
        self._check_payload(job, sub.payload)
        if sub.job_id != job_id:
            raise BadRequest(f"the submission is for job {sub.job_id}, not job {job_id}")
        if len(sub.dataset_id) != 32:
            raise Malformed("dataset must be 32 bytes")
        if sub.recipient != job.index:
            raise BadRequest(
                f"the share is for heavy node {sub.recipient}; this is heavy node {job.index}"
            )
        if self.clock() > job.view.deadline:
            raise Conflict(f"submissions to job {job_id} closed at its deadline")
        try:
            signer = sub.signer(self.escrow.domain)
        except wire.WireError as exc:
            raise Unauthenticated(str(exc)) from None
        record = self.stakes.dataset_since(sub.dataset_id, arrived)
        if not record.exists:
            raise Forbidden("the dataset is not staked on chain")
        if record.stake < self.stakes.min_stake:
            raise Forbidden(f"the dataset's stake ({record.stake} base units) was slashed "
                           f"below the market's minimum of {self.stakes.min_stake}: its owner "
                           "must top it up")  # fmt: skip
        if record.owner != signer:
            raise Unauthenticated("the submission is not signed by the dataset's owner")
        if record.owner in job.view.committee:
            raise Forbidden(
                f"the dataset's owner sits on job {job_id}'s committee: a member cannot "
                "provide data to a job it judges",
            )
        try:
            consenting = sub.participation_signer(self.escrow.domain)
        except wire.WireError as exc:
            raise Unauthenticated(str(exc)) from None
        if consenting != signer:
            raise Unauthenticated("the participation is not signed by the dataset's owner")
        if record.unstake_requested_at and record.unstake_requested_at <= job.view.posted_at:
            raise Forbidden("the dataset was unbonding when the job was posted")
        try:
            share = wire.open_sealed(
                sub.sealed, self._box, job.config.reduction.length, job.config.scheme
            )
        except wire.WireError as exc:
            raise BadRequest(str(exc)) from None
        dataset = "0x" + sub.dataset_id.hex()
        with self._lock:
            try:  # the round refuses duplicates and bad shares without changing
                job.round.handle(Submission(str(job_id), dataset, job.index, share))
            except DuplicateSubmissionError:
                held = self.store.submission_body(job_id, dataset)
                if held is not None and held.get("signature") == "0x" + sub.signature.hex():
                    # The same signed submission again (its answer was lost): already held.
                    return {"job": job_id, "dataset": dataset, "duplicate": True}
                raise Conflict(f"dataset {dataset} already submitted to job {job_id}") from None
            except LateSubmissionError:
                raise Conflict(f"submissions to job {job_id} are closed") from None
            except ComputeError as exc:
                raise BadRequest(f"share refused: {exc}") from None
            # Queued in the order the round took it; durable (group-committed with the other
            # submissions arriving now) before it is acknowledged.
            pending = self.store.enqueue_submission(
                job_id, dataset, share.astype("<u8").tobytes(), sub.to_json()
            )
        try:
            self.store.wait(pending)
        except BaseException:
            with self._lock:
                self._jobs.pop(job_id, None)  # the round saw it, the store did not: rebuild
            raise
        log.info("job %s: share from dataset %s", job_id, dataset)
        return {"job": job_id, "dataset": dataset, "stored": True}

    def _check_payload(self, job: _Job, payload: bytes) -> None:
        """A valuation job's submission carries encrypted scores; no other job's does."""
        if job.valuation is None:
            if payload:
                raise BadRequest(f"job {job.view.job_id} takes no payload; send the share alone")
            return
        if not payload:
            raise BadRequest(
                f"job {job.view.job_id} is a valuation job: send the encrypted scores too"
            )
        try:
            rows = scores_count(payload, job.backend)
        except TipError as exc:
            raise BadRequest(f"payload refused: {exc}") from None
        if not 1 <= rows <= job.valuation.max_examples:
            raise BadRequest(
                f"the payload scores {rows} rows; job {job.view.job_id} takes 1 to "
                f"{job.valuation.max_examples} per provider",
            )

    def accept_peer(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        job = self.job(job_id)
        payload, signature = body.get("payload"), body.get("signature")
        if not isinstance(payload, dict) or not isinstance(signature, str):
            raise Malformed("a peer message is {payload, signature}")
        try:
            sender = int(payload["sender"])
            signer = wire.payload_signer(payload, signature)
            message = wire.peer_message(payload)
        except (KeyError, TypeError, ValueError, wire.WireError) as exc:
            raise Malformed(f"malformed peer message: {exc}") from None
        if not 1 <= sender <= len(job.view.committee) or job.view.committee[sender - 1] != signer:
            raise Unauthenticated("the peer message is not signed by that committee member")
        if message.recipient != job.index or message.job_id != str(job_id):
            raise BadRequest("the peer message is not for this node and job")
        with self._lock:
            if self.store.has_peer_message(job_id, payload["kind"], sender):
                return {"job": job_id, "duplicate": True}
            try:  # the round refuses a bad message without changing: then nothing is stored
                self._deliver(job, message)
            except ComputeError as exc:
                raise BadRequest(f"peer message refused: {exc}") from None
            try:
                self.store.add_peer_message(job_id, payload["kind"], sender, payload)
            except BaseException:
                self._jobs.pop(job_id, None)  # the round saw it, the store did not: rebuild
                raise
            job.heard.add(sender)
        return {"job": job_id, "stored": True}

    def accept_signature(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """A peer's signature over the job's result or abort digest, taken only if the contract
        would take it: strict ECDSA (65 bytes, low s, v 27 or 28), recovering to the claimed
        signer, a committee member that accepted the job. One over a digest this node has not
        computed (yet) is held: at most one per signer and digest, and two digests per signer."""
        job = self.job(job_id)
        try:
            digest = bytes.fromhex(str(body["digest"]).removeprefix("0x"))
            signature = bytes.fromhex(str(body["signature"]).removeprefix("0x"))
            signer = to_checksum_address(body["signer"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Malformed(f"malformed signature message: {exc}") from None
        if len(digest) != 32:
            raise Malformed("the digest must be 32 bytes")
        signed_result = None
        if body.get("result") is not None:
            try:
                signed_result = result_from_json(body["result"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise Malformed(f"malformed result beside the signature: {exc}") from None
            if signed_result.job_id != job_id or (
                result_digest(self.escrow.domain, signed_result) != digest
            ):
                raise BadRequest("the result sent does not hash to the signed digest")
        try:
            recovered = recover_strict(digest, signature)
        except InvalidSignature as exc:
            raise Unauthenticated(f"the contract would refuse this signature: {exc}") from None
        if recovered != signer or signer not in job.view.committee:
            raise Unauthenticated("the signature is not a committee member's")
        if signer == self.address:
            raise BadRequest("this node's own signature is not taken from a peer")
        if not job.view.has_accepted(signer) and job.closed_at is None:
            job.view = self.escrow.job(job_id)  # it may have accepted since this node looked
        if not job.view.has_accepted(signer):
            raise Forbidden(f"{signer} did not accept job {job_id}: the contract does not "
                           "count its signature")  # fmt: skip
        try:
            stored = self.settler.take(
                job.settlement, Signed(signer, digest, signature), signed_result
            )
        except TooManyDigestsError as exc:
            raise TooMany(str(exc)) from None
        except ConflictingSignatureError as exc:
            raise Conflict(str(exc)) from None
        except SignatureRefusedError as exc:
            raise BadRequest(str(exc)) from None
        except BaseException:
            with self._lock:
                self._jobs.pop(job_id, None)  # the machine took it, the store did not: rebuild
            raise
        return {"job": job_id, "stored": stored, "duplicate": not stored}

    # ------------------------------------------------------------------------- valuation
    def _participants(self, job: _Job) -> tuple[str, ...]:
        if job.valuation is None:
            raise NotFound(f"job {job.view.job_id} is not a valuation job")
        outcome = job.round.outcome
        if not isinstance(outcome, RoundResult):
            raise Conflict(
                f"job {job.view.job_id} has no agreed participants"
                + (" (it is aborting)" if outcome is not None else " yet: wait for its round"),
            )
        return outcome.participants

    def valuation_status(self, job_id: int) -> dict[str, Any]:
        """The buyer's view of a valuation job: the participants whose encrypted scores it may
        fetch and decrypt, once the round opened the totals (its own insight; the payouts
        follow the committee's totals)."""
        job = self.job(job_id)
        participants = self._participants(job)
        return {
            "job": job_id,
            "participants": list(participants),
            "decided": job.settlement.decision is not None,
        }

    def scores_payload(self, job_id: int, dataset: str) -> bytes:
        """A participant's encrypted scores (only the buyer's key opens them)."""
        job = self.job(job_id)
        if dataset not in self._participants(job):
            raise NotFound(f"{dataset} is not a participant of job {job_id}")
        body = self.store.submission_body(job_id, dataset)
        assert body is not None and body.get("payload")
        return base64.b64decode(body["payload"])

    def _commit(self, job: _Job, member: int, digest: bytes) -> None:
        """Record that `member` took the late input `digest` as its own (before acting: a
        restarted node counts the same members)."""
        try:
            self.store.append(job.view.job_id, Input.COMMIT, f"{member}:{digest.hex()}")
        except Duplicate:
            return
        taken = job.commits.setdefault(member, set())
        taken.add(digest)
        if len(taken) > 1:
            log.warning("job %s: member %s took %s different late inputs: the committee "
                        "cannot resolve on one", job.view.job_id, member, len(taken))  # fmt: skip

    def _forwarder(
        self, job: _Job, record: dict[str, Any], body: dict[str, Any]
    ) -> tuple[int | None, bool]:
        """The committee member that forwarded this late input (so that one the buyer sent to
        some members reaches every member), or None; and whether that member says it took the
        input from the buyer as its own (signed)."""
        if body.get("peer") is None:
            return None, False
        committed = body.get("committed") is True
        signed = {**record, "committed": True} if committed else record
        try:
            peer = int(body["peer"])
            signer = wire.payload_signer(signed, str(body["peer_signature"]))
        except (KeyError, TypeError, ValueError, wire.WireError):
            raise Malformed("a forwarded input carries its peer and peer_signature") from None
        if not 1 <= peer <= len(job.view.committee) or job.view.committee[peer - 1] != signer:
            raise Unauthenticated("the forwarded input is not signed by that committee member")
        return peer, committed

    # ------------------------------------------------------------------------- late inputs
    def accept_late(self, job_id: int, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A kind's late input (`nodes.late`: a forecast's outcomes) signed by its poster,
        directly or forwarded by a committee peer; taken from `after` on. This node's first is
        its own: it tells every peer (`committed`), and resolves the round once every member
        that accepted the job committed to the same one (`_resolve`)."""
        job = self.job(job_id)
        terms = job.late
        if terms is None or terms.name != name:
            raise NotFound(f"job {job_id} takes no {name}")
        signature = body.get("signature")
        if not isinstance(signature, str):
            raise Malformed(f"the {name} are {{value, signature}}")
        now = self.clock()
        if now < terms.after:
            raise Conflict(f"the {name} of job {job_id} are taken from {format_utc(terms.after)} "
                           f"(unix {terms.after}); it is {int(now)}: post them then")  # fmt: skip
        value = body.get("value")
        _, _, digest = parse_late(terms, job_id, value, (job.index, self._box))
        try:
            signer = wire.payload_signer(value, signature)  # type: ignore[arg-type]
        except wire.WireError as exc:
            raise Malformed(f"malformed {name}: {exc}") from None
        if signer != terms.poster:
            raise Unauthenticated(f"the {name} are not signed by job {job_id}'s buyer "
                                  f"({terms.poster}) but by {signer}")  # fmt: skip
        record = {"value": value, "signature": signature}
        forwarder, committed = self._forwarder(job, record, body)
        if not job.resolved:
            job.view = self.escrow.job(job_id)  # who accepted: the members that must agree
        with self._lock:
            try:
                self.store.append(job_id, Input.LATE, digest.hex(), record)
                new = True
            except Duplicate:
                new = False
            if new and len(self.store.late_inputs(job_id)) > 1:
                log.warning("job %s: its buyer signed two different %s: the committee "
                            "cannot agree on one (it aborts unresolved)", job_id, name)  # fmt: skip
            if committed:
                assert forwarder is not None
                self._commit(job, forwarder, digest)
            own = not job.commits.get(job.index)
            if own:  # the first this node takes is its own: it tells every peer, with the input
                self._commit(job, job.index, digest)
                signed = {**record, "committed": True}
                forward = {**record, "peer": job.index, "committed": True,
                           "peer_signature": wire.sign_payload(self.account, signed)}  # fmt: skip
                for peer in job.config.committee:
                    if peer != job.index:
                        job.outbox.append((peer, api.late(job_id, name), forward))
            self._resolve(job)
        return {"job": job_id, "stored": True} if new else {"job": job_id, "duplicate": True}

    def _resolve(self, job: _Job) -> None:
        """Resolve the round with the late input every member that accepted the job committed
        to as its only one, once this node holds it (honest members commit once, so no two
        resolve differently)."""
        if job.late is None or job.resolved:
            return
        members = [p for p in job.config.committee
                   if job.view.committee[p - 1] in job.view.accepted]  # fmt: skip
        taken: set[bytes] = set()
        for member in members:
            held = job.commits.get(member, set())
            if len(held) != 1:
                return
            taken |= held
        if len(taken) != 1 or job.index not in members:
            return
        (digest,) = taken
        record = self.store.late_inputs(job.view.job_id).get(digest.hex())
        if record is None:
            return
        _, config, _ = parse_late(
            job.late, job.view.job_id, record["value"], (job.index, self._box)
        )
        job.round.resolve(config)
        job.config, job.resolved = config, True
        log.info("job %s: every member holds the same %s; the round resolves", job.view.job_id,
                 job.late.name)  # fmt: skip

    def _abort_unresolved(self, job: _Job) -> None:
        """No agreed late input by its `decide_by`: sign an abort (the buyer is refunded; the
        members are not left to the liveness penalty of an expired job)."""
        assert job.late is not None
        reason = f"no_agreed_{job.late.name}"
        digest = abort_digest(self.escrow.domain, job.view.job_id, reason)
        decision = Decision(Kind.ABORT, digest, reason=reason)
        log.warning("job %s: no %s every member agreed on by %s; signing an abort",
                    job.view.job_id, job.late.name, format_utc(job.late.decide_by))  # fmt: skip
        signature = self.settler.decide(job.settlement, decision)
        self._send_signature(job, decision, signature)

    def result_document(self, job_id: int) -> bytes:
        """The result document this node signed, once the chain has finalized that result
        (before, nobody may rely on it: 409)."""
        held = self.store.protected(job_id)
        if held is None or held.kind != Kind.RESULT or held.document is None:
            raise NotFound(f"job {job_id} has no result here (yet)")
        if job_id not in self._finalized:
            view = self.escrow.job(job_id)
            if view.state is not JobState.FINALIZED:
                raise Conflict(f"job {job_id} is {view.state.name.lower()}: its result is "
                               "served once the chain has finalized it")  # fmt: skip
            decision = Decision.from_message(held.kind, held.digest, held.message, held.document)
            assert decision.result is not None
            if view.result_hash != decision.result.result_hash:
                raise Conflict(f"job {job_id} was finalized with another result than "
                               "this node's; ask another committee member")  # fmt: skip
            self._finalized.add(job_id)
        return held.document

    def status(self, job_id: int) -> dict[str, Any]:
        job = self.job(job_id)
        return {
            "job": job_id,
            "index": job.index,
            "phase": str(job.round.phase),
            "submissions": self.store.submission_count(job_id),
            "settlement": str(job.settlement.phase),
            # The kind's late input the round still waits for (a forecast's outcomes, a
            # valuation's query), with the time this node aborts without it.
            "waiting_for": job.late.name if job.late and not job.resolved else None,
            "decide_by": job.late.decide_by if job.late and not job.resolved else None,
        }

    # ------------------------------------------------------------------------- the driver
    def start(self, interval: float = 0.2) -> None:
        try:  # rebuild the jobs it serves before the first tick, so requests find them
            self._discover()
        except Exception:
            log.exception("heavy node %s: first look at the chain failed", self.address)
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:  # keep serving; the next tick retries
                log.exception("heavy node %s: tick failed", self.address)

    def tick(self) -> None:
        """One pass: discover jobs (draw, accept), close those past their deadline, time out
        silent peers, deliver queued messages, settle finished rounds."""
        if time.monotonic() >= self._next_discovery:
            self._discover(self.discover_every)
        now = self.clock()
        for job in list(self._jobs.values()):
            with self._lock:
                waiting = job.late is not None and not job.resolved  # for its late input
                if job.closed_at is None and now > job.view.deadline and not waiting:
                    self._close(job, now)
                if job.closed_at is not None and now - job.closed_at > self.peer_timeout:
                    for peer in job.config.committee:
                        if peer != job.index and peer not in job.heard:
                            self._give_up(job, peer)
                if waiting and now > job.late.decide_by and job.settlement.decision is None:
                    self._abort_unresolved(job)
            self._flush(job)
            if job.round.outcome is not None:
                self._settle(job)
            elif job.settlement.decision is not None:  # an abort for a missing late input
                self.settler.step(job.settlement, now)

    def _close(self, job: _Job, now: float) -> None:
        """The deadline passed: close submissions; members that never accepted the job are
        peers this node does not wait for (acceptance is over by the deadline)."""
        job.view = self.escrow.job(job.view.job_id)
        self.store.append(job.view.job_id, Input.CLOSE, body={"at": now})  # before acting
        job.closed_at = now
        log.info("job %s: submissions closed at the deadline with %d shares here", job.view.job_id,
                 self.store.submission_count(job.view.job_id))  # fmt: skip
        self._deliver(job, CloseSubmissions(str(job.view.job_id)))
        for peer in job.config.committee:
            if peer != job.index and job.view.committee[peer - 1] not in job.view.accepted:
                self._give_up(job, peer)

    def _give_up(self, job: _Job, peer: int) -> None:
        """Stop waiting for `peer` in this job's round."""
        if peer in job.heard:
            return
        self.store.append(job.view.job_id, Input.GIVE_UP, str(peer))  # before acting
        job.heard.add(peer)
        job.missing.add(peer)
        self._deliver(job, PeerUnavailable(str(job.view.job_id), peer))

    def _discover(self, every: float = 1.0) -> None:
        """Look at jobs posted since the last look, and again at those still being staffed (at
        most once per `every` seconds): draw committees that are due, accept jobs this node was
        drawn for and can serve, and start serving accepted ones."""
        self._next_discovery = time.monotonic() + every
        head = self.escrow.block_number()
        if head == self._looked_at and self._looked.is_set():
            return  # no new block: nothing on chain changed since the last look
        self._looked_at = head
        self.stakes.sync()  # kept current, so that a submission rarely finds the view behind
        count = self.escrow.job_count()
        for job_id in range(self._seen + 1, count + 1):
            log.info("job %s: posted; looking at it", job_id)
        self._watching.update(range(self._seen + 1, count + 1))
        self._seen = count
        for job_id in sorted(self._watching):
            try:
                if self._staff(self.escrow.job(job_id)):
                    self._watching.discard(job_id)
            except Rejected as exc:
                self._watching.discard(job_id)
                log.warning("job %s: not taking it: %s", job_id, exc.detail)
        self._looked.set()

    def _staff(self, view: JobView) -> bool:
        """Move one posted job along; True when there is nothing more to do for it here."""
        if view.state is not JobState.POSTED:
            return True
        if not view.drawn:
            if self.chain.clock() > view.accept_by:
                return True  # nobody can staff it any more: `expire` refunds the buyer
            if self.chain.web3.eth.block_number > view.draw_block:
                try:
                    self.escrow.draw_committee(self.account, view.job_id)
                except (E.MarketplaceCommitteeAlreadyDrawn, E.MarketplaceJobNotPosted):
                    pass  # another node drew it first
                except E.MarketplaceNotEnoughHeavyNodes as exc:
                    log.warning("job %s: cannot draw a committee yet: %s", view.job_id, exc)
                    return False
                view = self.escrow.job(view.job_id)
            if not view.drawn:
                return False
        if self.address not in view.committee:
            log.info("job %s: not drawn for its committee", view.job_id)
            return True
        if view.has_accepted(self.address):
            self._open(view)
            return True
        if self.chain.clock() > view.accept_by:
            return True
        share = fee_share(view.budget, view.fee_bps, view.committee_size)
        if share < self.min_fee:
            raise FeeTooLow(f"its fee share, at most {share} base units, is below this "
                           f"node's minimum of {self.min_fee}")  # fmt: skip
        self._open(view)  # fetches and checks the proposal: raises what this node cannot serve
        try:
            self.escrow.accept_job(self.account, view.job_id)
        except E.MarketplaceAlreadyAccepted:
            pass
        except (E.MarketplaceAcceptWindowClosed, E.MarketplaceJobNotPosted):
            with self._lock:
                self._jobs.pop(view.job_id, None)
            return True
        with self._lock:
            self._jobs[view.job_id].view = self.escrow.job(view.job_id)
        log.info("job %s: accepted (drawn as member %d of %d; submissions close %s)",
                 view.job_id, view.committee.index(self.address) + 1, view.committee_size,
                 format_utc(view.deadline))  # fmt: skip
        return True

    def _endpoint(self, job: _Job, peer: int) -> str:
        """Where to post to `peer`: its registered endpoint, refused (`WireError`) unless it is
        a plain `scheme://host:port` (`wire.node_endpoint`)."""
        if peer not in job.endpoints:
            record = self.staking.heavy_node(job.view.committee[peer - 1])
            job.endpoints[peer] = wire.node_endpoint(record.endpoint)
        return job.endpoints[peer]

    def _flush(self, job: _Job) -> None:
        with self._lock:
            pending, job.outbox = job.outbox, []
        keep = []
        for peer, path, body in pending:
            try:
                client = HeavyClient(self._endpoint(job, peer), self.http, timeout=5)
            except wire.WireError as exc:  # a member's endpoint no node posts to
                log.warning("peer %s: not posting %s: %s", peer, path, exc)
                continue
            try:
                response = client.post(path, body)
                if response.status_code >= 500:
                    keep.append((peer, path, body))
                elif response.status_code >= 400:
                    log.warning("peer %s refused %s: %s", peer, path, response.text[:200])
            except requests.RequestException:
                keep.append((peer, path, body))
        with self._lock:
            job.outbox = keep + job.outbox

    # ------------------------------------------------------------------------- settlement
    def _settle(self, job: _Job) -> None:
        """Sign the round's outcome once it is final (`nodes.settle` records it before
        signing), send the signature to the peers, and move the settlement on."""
        settlement = job.settlement
        if settlement.decision is None and (
            settlement.phase is Phase.AWAITING_OUTCOME
            or (settlement.phase is Phase.SETTLED and isinstance(job.round.outcome, RoundResult))
        ):  # a result settled by the peers first: this node signs it to claim its fee share
            decision = self._decision(job)
            if decision is not None:
                log.info("job %s: the committee agreed; signing %s", job.view.job_id,
                         _describe(decision))  # fmt: skip
                signature = self.settler.decide(settlement, decision)
                with self._lock:
                    self._send_signature(job, decision, signature)
        self.settler.step(settlement, self.clock())

    def _decision(self, job: _Job) -> Decision | None:
        """What this node signs for the round's outcome (a valuation job's as soon as the
        round opened its totals: nothing waits for the buyer)."""
        job_id, outcome = job.view.job_id, job.round.outcome
        if isinstance(outcome, RoundResult):
            self.stakes.sync()  # the participants' stakes as they stand now, in one read
            document, result, consents = results.build(
                job.view, job.config, job.valuation, outcome, self.stakes, self.store,
                proposal=job.proposal,
            )  # fmt: skip
            digest = result_digest(self.escrow.domain, result)
            return Decision(Kind.RESULT, digest, result, consents, document.to_bytes())
        assert isinstance(outcome, Abort)
        reason = outcome.reason.value
        return Decision(Kind.ABORT, abort_digest(self.escrow.domain, job_id, reason), reason=reason)

    def _send_signature(self, job: _Job, decision: Decision, signature: bytes) -> None:
        """To every peer: the signature and, for a result, the result it signs (so that a
        member that signs two different results can be reported by whoever holds both)."""
        body: dict[str, Any] = {"digest": "0x" + decision.digest.hex(), "signer": self.address,
                                "signature": "0x" + signature.hex()}  # fmt: skip
        if decision.result is not None:
            body["result"] = result_json(decision.result)
        for peer in job.config.committee:
            if peer != job.index:
                job.outbox.append((peer, api.signatures(job.view.job_id), body))
