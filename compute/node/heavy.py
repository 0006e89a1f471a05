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
the same EIP-712 `Result`, signs it and sends the signature to its peers; any member holding a
quorum of signatures calls `finalize` (a second call finds the job settled and stops). Below the
participant minimum, or with a peer caught cheating, the round aborts and the members sign and
submit `abort` the same way, which refunds the buyer in full.
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
from eth_utils import keccak, to_checksum_address

from compute.dp import sample_noise
from compute.ensemble import WEIGHT_SCALE
from compute.errors import ComputeError, DuplicateSubmissionError, LateSubmissionError
from compute.messages import (
    CloseSubmissions,
    Outgoing,
    PeerUnavailable,
    RoundConfig,
    Submission,
)
from compute.messages import Result as RoundResult
from compute.node import wire
from compute.node.store import Duplicate, Store
from compute.proposal import ValuationSpec
from compute.randomness import AesCtrRandom
from compute.reduce import Abort
from compute.round import HeavyNodeRound
from market.chain import Chain, ContractRevert, Deployment
from market.chain import errors as E
from market.escrow import EscrowClient, JobState, JobView, Result, Slash, SlashConsent
from market.escrow.documents import ResultDocument
from market.escrow.eip712 import abort_digest, recover, result_digest, sign_digest
from market.keys import box_private_key
from market.staking import StakingClient
from market.valuation.merkle import PayoutTree
from market.valuation.payouts import split_by_weights
from market.valuation.tip.errors import TipError
from market.valuation.tip.job import TipTerms
from market.valuation.tip.release import ScoreReport, scores_count
from market.valuation.tip.settle import settle_valuation

log = logging.getLogger("market.heavy")

ConfigFor = Callable[[JobView], RoundConfig]
"""How a node learns a job's round configuration (from its proposal)."""
ValuationFor = Callable[[JobView], ValuationSpec | None]
"""How a node learns a valuation job's TIP terms (None for other kinds)."""


def result_uri(job_id: int) -> str:
    """Where a job's result document is: `GET /jobs/{id}/result` on any committee member."""
    return f"committee:/jobs/{job_id}/result"


class Rejected(Exception):
    """A request the node refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Job:
    view: JobView
    index: int
    config: RoundConfig
    round: HeavyNodeRound
    closed_at: float | None = None
    heard: set[int] = field(default_factory=set)
    outbox: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    """(peer index, path, body) still to deliver."""
    settled: bool = False
    endpoints: dict[int, str] = field(default_factory=dict)
    digest: bytes | None = None
    kind: str | None = None
    payload: Any = None
    consents: tuple[SlashConsent, ...] = ()
    valuation: ValuationSpec | None = None
    backend: str = ""
    """A valuation job's HE backend (its TIP terms, checked when the job is first seen)."""
    deciding: bool = False
    """A valuation job's report window is over: no further report is taken."""


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
        min_fee: int = 0,
    ) -> None:
        self.account = account
        self.address = account.address
        self.chain = chain
        self.escrow = EscrowClient(chain, deployment)
        self.staking = StakingClient(chain, deployment)
        self.store = store
        self.config_for = config_for
        self.valuation_for = valuation_for
        self.clock = clock
        self.peer_timeout = peer_timeout
        self.min_fee = min_fee
        """The smallest fee share (token base units) for which this node accepts a job."""
        self.http = http or requests.Session()
        self._box = box_private_key(account)
        self._jobs: dict[int, _Job] = {}
        self._watching: set[int] = set()
        """Posted jobs whose committee is not drawn yet, or drawn with this node not accepted."""
        self._refused: set[int] = set()
        """Jobs this node was drawn for and will not serve."""
        self._seen = 0
        self._next_discovery = 0.0
        """Jobs up to this id have been looked at."""
        self._lock = threading.RLock()
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
            raise Rejected(503, f"this heavy node is starting; retry job {job_id} shortly")
        raise Rejected(404, f"this heavy node does not serve job {job_id} (or has not yet "
                       "accepted it on chain)")  # fmt: skip

    def _open(self, view: JobView) -> _Job:
        """Build (and rebuild from the store) this node's state for a job it accepted or is
        about to accept; `Rejected` when its proposal cannot be served."""
        job_id = view.job_id
        with self._lock:
            if job_id in self._jobs:
                return self._jobs[job_id]
            try:
                config = self.config_for(view)
                valuation = self.valuation_for(view) if self.valuation_for else None
                backend = TipTerms.from_json(valuation.tip).backend if valuation else ""
            except Exception as exc:  # an unfetchable, invalid or contradictory proposal
                raise Rejected(409, f"this node cannot serve job {job_id}: {exc}") from None
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

            job = _Job(view, index, config, HeavyNodeRound(config, index, rng, sampler))
            job.valuation, job.backend = valuation, backend
            self._jobs[job_id] = job
            self._replay(job)
            return job

    def _replay(self, job: _Job) -> None:
        """Feed back what the store holds (after a restart, the node continues where it was)."""
        for dataset, share in self.store.submissions(job.view.job_id):
            job.round.handle(
                Submission(str(job.view.job_id), dataset, job.index, np.frombuffer(share, "<u8"))
            )
        for payload in self.store.peer_messages(job.view.job_id):
            job.heard.add(int(payload["sender"]))
            try:
                self._deliver(job, wire.peer_message(payload))
            except ComputeError as exc:  # taken before the restart; the round moved on since
                log.warning(
                    "job %s: replaying peer %s: %s", job.view.job_id, payload["sender"], exc
                )

    def _deliver(self, job: _Job, event: Any) -> None:
        for message in job.round.handle(event):
            self._queue(job, message)

    def _queue(self, job: _Job, message: Outgoing) -> None:
        payload = wire.peer_payload(message)
        body = {"payload": payload, "signature": wire.sign_payload(self.account, payload)}
        job.outbox.append((message.recipient, f"/jobs/{job.view.job_id}/peer", body))

    # ------------------------------------------------------------------------- HTTP handlers
    def accept_submission(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
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
            raise Rejected(422, f"malformed submission: {exc}") from None
        self._check_payload(job, sub.payload)
        if sub.job_id != job_id:
            raise Rejected(400, f"the submission is for job {sub.job_id}, not job {job_id}")
        if len(sub.dataset_id) != 32:
            raise Rejected(422, "dataset must be 32 bytes")
        if sub.recipient != job.index:
            raise Rejected(
                400, f"the share is for heavy node {sub.recipient}; this is heavy node {job.index}"
            )
        if self.clock() > job.view.deadline:
            raise Rejected(409, f"submissions to job {job_id} closed at its deadline")
        try:
            signer = sub.signer(self.escrow.domain)
        except wire.WireError as exc:
            raise Rejected(401, str(exc)) from None
        record = self.staking.dataset(sub.dataset_id)
        if not record.exists:
            raise Rejected(403, "the dataset is not staked on chain")
        if record.owner != signer:
            raise Rejected(401, "the submission is not signed by the dataset's owner")
        if record.owner in job.view.committee:
            raise Rejected(
                403, f"the dataset's owner sits on job {job_id}'s committee: a member cannot "
                "provide data to a job it judges"
            )
        try:
            consenting = sub.participation_signer(self.escrow.domain)
        except wire.WireError as exc:
            raise Rejected(401, str(exc)) from None
        if consenting != signer:
            raise Rejected(401, "the participation is not signed by the dataset's owner")
        if record.unstake_requested_at and record.unstake_requested_at <= job.view.posted_at:
            raise Rejected(403, "the dataset was unbonding when the job was posted")
        try:
            share = wire.open_sealed(sub.sealed, self._box, job.config.reduction.length)
        except wire.WireError as exc:
            raise Rejected(400, str(exc)) from None
        dataset = "0x" + sub.dataset_id.hex()
        with self._lock:
            try:  # the round refuses duplicates and bad shares without changing
                job.round.handle(Submission(str(job_id), dataset, job.index, share))
            except DuplicateSubmissionError:
                raise Rejected(
                    409, f"dataset {dataset} already submitted to job {job_id}"
                ) from None
            except LateSubmissionError:
                raise Rejected(409, f"submissions to job {job_id} are closed") from None
            except ComputeError as exc:
                raise Rejected(400, f"share refused: {exc}") from None
            try:
                self.store.add_submission(
                    job_id, dataset, sub.nonce, share.astype("<u8").tobytes(), sub.to_json()
                )
            except BaseException:
                self._jobs.pop(job_id, None)  # the round saw it, the store did not: rebuild
                raise
        return {"job": job_id, "dataset": dataset, "stored": True}

    def _check_payload(self, job: _Job, payload: bytes) -> None:
        """A valuation job's submission carries encrypted scores; no other job's does."""
        if job.valuation is None:
            if payload:
                raise Rejected(400, f"job {job.view.job_id} takes no payload; send the share alone")
            return
        if not payload:
            raise Rejected(
                400, f"job {job.view.job_id} is a valuation job: send the encrypted scores too"
            )
        try:
            rows = scores_count(payload, job.backend)
        except TipError as exc:
            raise Rejected(400, f"payload refused: {exc}") from None
        if not 1 <= rows <= job.valuation.max_examples:
            raise Rejected(
                400,
                f"the payload scores {rows} rows; job {job.view.job_id} takes 1 to "
                f"{job.valuation.max_examples} per provider",
            )

    def accept_peer(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        job = self.job(job_id)
        payload, signature = body.get("payload"), body.get("signature")
        if not isinstance(payload, dict) or not isinstance(signature, str):
            raise Rejected(422, "a peer message is {payload, signature}")
        try:
            sender = int(payload["sender"])
            signer = wire.payload_signer(payload, signature)
            message = wire.peer_message(payload)
        except (KeyError, TypeError, ValueError, wire.WireError) as exc:
            raise Rejected(422, f"malformed peer message: {exc}") from None
        if not 1 <= sender <= len(job.view.committee) or job.view.committee[sender - 1] != signer:
            raise Rejected(401, "the peer message is not signed by that committee member")
        if message.recipient != job.index or message.job_id != str(job_id):
            raise Rejected(400, "the peer message is not for this node and job")
        with self._lock:
            if self.store.has_peer_message(job_id, payload["kind"], sender):
                return {"job": job_id, "duplicate": True}
            try:  # the round refuses a bad message without changing: then nothing is stored
                self._deliver(job, message)
            except ComputeError as exc:
                raise Rejected(400, f"peer message refused: {exc}") from None
            try:
                self.store.add_peer_message(job_id, payload["kind"], sender, payload)
            except BaseException:
                self._jobs.pop(job_id, None)  # the round saw it, the store did not: rebuild
                raise
            job.heard.add(sender)
        return {"job": job_id, "stored": True}

    def accept_signature(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        job = self.job(job_id)
        try:
            digest = bytes.fromhex(str(body["digest"]).removeprefix("0x"))
            signature = bytes.fromhex(str(body["signature"]).removeprefix("0x"))
            signer = to_checksum_address(body["signer"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Rejected(422, f"malformed signature message: {exc}") from None
        try:
            recovered = recover(digest, signature)
        except Exception:
            raise Rejected(401, "malformed signature") from None
        if recovered != signer or signer not in job.view.committee:
            raise Rejected(401, "the signature is not a committee member's")
        self.store.add_signature(job_id, digest, signer, signature)
        return {"job": job_id, "stored": True}

    # ------------------------------------------------------------------------- valuation
    def _participants(self, job: _Job) -> tuple[str, ...]:
        if job.valuation is None:
            raise Rejected(404, f"job {job.view.job_id} is not a valuation job")
        outcome = job.round.outcome
        if not isinstance(outcome, RoundResult):
            raise Rejected(
                409,
                f"job {job.view.job_id} has no agreed participants"
                + (" (it is aborting)" if outcome is not None else " yet: wait for its round"),
            )
        return outcome.participants

    def report_window(self, job: _Job) -> tuple[int, float]:
        """When the buyer's report is due, and when this node decides without it."""
        assert job.valuation is not None
        due = job.view.deadline + job.valuation.decrypt_window
        return due, due + self.peer_timeout

    def valuation_status(self, job_id: int) -> dict[str, Any]:
        """What the buyer needs to decrypt: the participants and when its report is due."""
        job = self.job(job_id)
        participants = self._participants(job)
        due, _ = self.report_window(job)
        return {
            "job": job_id,
            "participants": list(participants),
            "rows": job.round.outcome.aggregate.count,  # type: ignore[union-attr]
            "report_due": due,
            "reports": len(self.store.score_reports(job_id)),
            "decided": job.digest is not None,
        }

    def scores_payload(self, job_id: int, dataset: str) -> bytes:
        """A participant's encrypted scores (only the buyer's key opens them)."""
        job = self.job(job_id)
        if dataset not in self._participants(job):
            raise Rejected(404, f"{dataset} is not a participant of job {job_id}")
        body = self.store.submission_body(job_id, dataset)
        assert body is not None and body.get("payload")
        return base64.b64decode(body["payload"])

    def accept_scores(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """The buyer's signed score report, directly or forwarded by a committee peer."""
        job = self.job(job_id)
        participants = self._participants(job)
        report_json, signature = body.get("report"), body.get("signature")
        if not isinstance(signature, str):
            raise Rejected(422, "a score report is {report, signature}")
        try:
            report = ScoreReport.from_json(report_json)
            signer = wire.payload_signer(report_json, signature)  # the JSON as signed
        except (TipError, wire.WireError) as exc:
            raise Rejected(422, f"malformed score report: {exc}") from None
        if report.job_id != job_id:
            raise Rejected(400, f"the report is for job {report.job_id}, not job {job_id}")
        if signer != job.view.buyer:
            raise Rejected(401, "the report is not signed by the job's buyer")
        try:
            report.check_covers(participants)
        except TipError as exc:
            raise Rejected(400, str(exc)) from None
        due, _ = self.report_window(job)
        record = {"report": report_json, "signature": signature}
        forwarder = self._forwarder(job, record, body)
        if forwarder is None and self.clock() > due:
            raise Rejected(409, f"reports for job {job_id} were due by {due} (unix seconds)")
        digest = keccak(report.canonical())
        with self._lock:
            if job.deciding:  # what it holds now is what it decides on
                if self.store.has_score_report(job_id, digest):
                    return {"job": job_id, "duplicate": True}
                raise Rejected(409, f"the committee has already decided job {job_id}")
            try:
                self.store.add_score_report(job_id, digest, record)
            except Duplicate:
                return {"job": job_id, "duplicate": True}
            forward = {
                **record,
                "peer": job.index,
                "peer_signature": wire.sign_payload(self.account, record),
            }
            for peer in job.config.committee:
                if peer != job.index and peer != forwarder:
                    job.outbox.append((peer, f"/jobs/{job_id}/scores", forward))
        return {"job": job_id, "stored": True}

    def _forwarder(self, job: _Job, record: dict[str, Any], body: dict[str, Any]) -> int | None:
        """The committee member that forwarded this report (its copy is taken until this node
        decides, so that a report the buyer sent in time reaches every member), or None."""
        if body.get("peer") is None:
            return None
        try:
            peer = int(body["peer"])
            signer = wire.payload_signer(record, str(body["peer_signature"]))
        except (KeyError, TypeError, ValueError, wire.WireError):
            raise Rejected(422, "a forwarded report carries its peer and peer_signature") from None
        if not 1 <= peer <= len(job.view.committee) or job.view.committee[peer - 1] != signer:
            raise Rejected(401, "the forwarded report is not signed by that committee member")
        return peer

    def result_document(self, job_id: int) -> bytes:
        status = self.store.status(job_id)
        if status is None or status[1] is None:
            raise Rejected(404, f"job {job_id} has no result here (yet)")
        return status[1]

    def status(self, job_id: int) -> dict[str, Any]:
        job = self.job(job_id)
        stored = self.store.status(job_id)
        return {
            "job": job_id,
            "index": job.index,
            "phase": str(job.round.phase),
            "submissions": self.store.submission_count(job_id),
            "status": stored[0] if stored else "collecting",
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
            self._discover()
        now = self.clock()
        for job in list(self._jobs.values()):
            with self._lock:
                if job.closed_at is None and now > job.view.deadline:
                    self._close(job, now)
                if job.closed_at is not None and now - job.closed_at > self.peer_timeout:
                    for peer in job.config.committee:
                        if peer != job.index and peer not in job.heard:
                            self._give_up(job, peer)
            self._flush(job)
            if job.round.outcome is not None and not job.settled:
                self._settle(job)

    def _close(self, job: _Job, now: float) -> None:
        """The deadline passed: close submissions; members that never accepted the job are
        peers this node does not wait for (acceptance is over by the deadline)."""
        job.view = self.escrow.job(job.view.job_id)
        job.closed_at = now
        self._deliver(job, CloseSubmissions(str(job.view.job_id)))
        for peer in job.config.committee:
            if peer != job.index and job.view.committee[peer - 1] not in job.view.accepted:
                self._give_up(job, peer)

    def _give_up(self, job: _Job, peer: int) -> None:
        """Stop waiting for `peer` in this job's round."""
        if peer in job.heard:
            return
        job.heard.add(peer)
        self._deliver(job, PeerUnavailable(str(job.view.job_id), peer))

    def _discover(self, every: float = 1.0) -> None:
        """Look at jobs posted since the last look, and again at those still being staffed (at
        most once per `every` seconds): draw committees that are due, accept jobs this node was
        drawn for and can serve, and start serving accepted ones."""
        self._next_discovery = time.monotonic() + every
        count = self.escrow.job_count()
        self._watching.update(range(self._seen + 1, count + 1))
        self._seen = count
        for job_id in sorted(self._watching):
            try:
                if self._staff(self.escrow.job(job_id)):
                    self._watching.discard(job_id)
            except Rejected as exc:
                self._watching.discard(job_id)
                self._refused.add(job_id)
                log.warning("heavy node %s: not taking job %s: %s", self.address, job_id,
                            exc.detail)  # fmt: skip
        self._looked.set()

    def _staff(self, view: JobView) -> bool:
        """Move one posted job along; True when there is nothing more to do for it here."""
        if view.state is not JobState.POSTED or view.job_id in self._refused:
            return True
        if not view.drawn:
            if self.chain.now() > view.accept_by:
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
            return True
        if view.has_accepted(self.address):
            self._open(view)
            return True
        if self.chain.now() > view.accept_by:
            return True
        share = view.budget * view.fee_bps // 10_000 // view.committee_size
        if share < self.min_fee:
            raise Rejected(402, f"its fee share, at most {share} base units, is below this "
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
        log.info("heavy node %s: accepted job %s", self.address, view.job_id)
        return True

    def _endpoint(self, job: _Job, peer: int) -> str:
        if peer not in job.endpoints:
            record = self.staking.heavy_node(job.view.committee[peer - 1])
            job.endpoints[peer] = record.endpoint.rstrip("/")
        return job.endpoints[peer]

    def _flush(self, job: _Job) -> None:
        with self._lock:
            pending, job.outbox = job.outbox, []
        keep = []
        for peer, path, body in pending:
            try:
                response = self.http.post(self._endpoint(job, peer) + path, json=body, timeout=5)
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
        job_id = job.view.job_id
        if job.digest is None:
            outcome = job.round.outcome
            if isinstance(outcome, RoundResult) and job.valuation is not None:
                if self.clock() <= self.report_window(job)[1]:
                    if self.store.status(job_id) in (None, ("collecting", None)):
                        self.store.set_status(job_id, "awaiting scores")
                    return
                with self._lock:
                    job.deciding = True
            if isinstance(outcome, RoundResult):
                document, result = self._result(job, outcome)
                self.store.set_status(job_id, "result", document.to_bytes())
                job.kind, job.payload = "result", result
                job.digest = result_digest(self.escrow.domain, result)
            else:
                assert isinstance(outcome, Abort)
                job.kind, job.payload = "abort", outcome.reason.value
                job.digest = abort_digest(self.escrow.domain, job_id, job.payload)
                self.store.set_status(job_id, "aborting")
            signature = sign_digest(self.account, job.digest)
            self.store.add_signature(job_id, job.digest, self.address, signature)
            body = {
                "digest": "0x" + job.digest.hex(),
                "signer": self.address,
                "signature": "0x" + signature.hex(),
            }
            with self._lock:
                for peer in job.config.committee:
                    if peer != job.index:
                        job.outbox.append((peer, f"/jobs/{job_id}/signatures", body))
        state = self.escrow.job_state(job_id)
        if state is not JobState.POSTED:
            job.settled = True
            self.store.set_status(job_id, state.name.lower())
            return
        signatures = self.store.signatures(job_id, job.digest)
        if len(signatures) < job.view.quorum:
            return
        ordered = sorted(signatures.items(), key=lambda kv: int(kv[0], 16))
        sigs = [sig for _, sig in ordered]
        try:
            if job.kind == "result":
                self.escrow.finalize(self.account, job.payload, sigs, job.consents)
            else:
                self.escrow.abort(self.account, job_id, job.payload, sigs)
        except (E.MarketplaceJobNotPosted, E.MarketplaceSettlementClosed):
            pass  # a peer settled it first, or the window closed
        except ContractRevert as exc:
            log.error("job %s: settlement reverted: %s", job_id, exc)
            return
        job.settled = True
        self.store.set_status(job_id, self.escrow.job_state(job_id).name.lower())

    def _result(self, job: _Job, outcome: RoundResult) -> tuple[ResultDocument, Result]:
        view = job.view
        records = {
            d: self.staking.dataset(bytes.fromhex(d.removeprefix("0x")))
            for d in outcome.participants
        }
        # Each owner's share: one per dataset, or for an ensemble its models' fitted weights.
        fit = outcome.fit
        shares = (
            dict(zip(outcome.participants, (int(w) for w in fit.weights), strict=True))
            if fit is not None
            else dict.fromkeys(outcome.participants, 1)
        )
        owners: dict[str, int] = {}
        for dataset, record in records.items():
            owners[record.owner] = owners.get(record.owner, 0) + shares[dataset]
        pool = view.budget - view.budget * view.fee_bps // 10_000
        payouts = split_pool(pool, owners)
        slashes: tuple[Slash, ...] = ()
        slashed_to_payouts = 0
        valuation: dict[str, Any] | None = None
        if job.valuation is not None:
            valuation = self._valuation_summary(job, outcome, records)
            if valuation["report"] is not None:
                influence, slashes, slashed_to_payouts = self._by_influence(job, records, valuation)
                # No positive score pays the pool out equally (the slashed stake is burned):
                # what the buyer gets back never depends on the scores it reports.
                if influence:
                    payouts = influence
                else:
                    valuation["rule"] = "equal (no positive score)"
        tree = PayoutTree.build(payouts) if payouts else None
        summary = {
            "op": str(job.config.reduction.op),
            "values": [float(v) for v in outcome.values],
            "count": outcome.aggregate.count,
            "participants": list(outcome.participants),
            "privacy": (
                {"epsilon": outcome.privacy.epsilon, "delta": outcome.privacy.delta}
                if outcome.privacy is not None
                else None
            ),
        }
        if valuation is not None:
            summary["valuation"] = valuation
        if fit is not None:
            plan = job.config.ensemble
            assert plan is not None
            summary["ensemble"] = {
                "classes": plan.layout.classes,
                "test_rows": plan.layout.n_test,
                "validation_soft_accuracy": dict(
                    zip(outcome.participants, (float(a) for a in fit.accuracy), strict=True)
                ),
                "weights": {d: w / WEIGHT_SCALE for d, w in shares.items()},
                "weight_scale": WEIGHT_SCALE,
                "values": "the weighted ensemble's probabilities, test row by test row",
            }
        document = ResultDocument(view.job_id, summary, tree)
        result = Result(
            job_id=view.job_id,
            result_hash=document.hash,
            result_uri=result_uri(view.job_id),
            payout_root=tree.root if tree else bytes(32),
            payout_total=(tree.total if tree else 0) - slashed_to_payouts,
            participants=len(outcome.participants),
            slashed_to_payouts=slashed_to_payouts,
            slashes=slashes,
        )
        return document, result

    def _valuation_summary(
        self, job: _Job, outcome: RoundResult, records: dict[str, Any]
    ) -> dict[str, Any]:
        """Which report the committee settles on: the buyer's, when it sent exactly one;
        otherwise (none in time, or two different ones) the pool is split equally."""
        reports = self.store.score_reports(job.view.job_id)
        if len(reports) == 1:
            return {"report": reports[0], "rule": "influence"}
        reason = (
            "the buyer reported no scores in time"
            if not reports
            else f"the buyer signed {len(reports)} different score reports"
        )
        return {"report": None, "rule": "equal", "reason": reason, "conflicting": reports}

    def _by_influence(
        self, job: _Job, records: dict[str, Any], valuation: dict[str, Any]
    ) -> tuple[dict[str, int], tuple[Slash, ...], int]:
        """Payouts for positive influence, slashes for harm within each signed cap."""
        assert job.valuation is not None
        view, spec = job.view, job.valuation
        report = ScoreReport.from_json(valuation["report"]["report"])
        bodies = self.store.submission_bodies(view.job_id)
        settled = settle_valuation(
            report.scores,
            {d: r.owner for d, r in records.items()},
            budget=view.budget,
            fee_bps=view.fee_bps,
            n_signers=view.quorum,
            stakes={d: r.stake for d, r in records.items()},
            caps_bps={d: int(bodies[d]["participation_bps"]) for d in records},
            job_max_slash_bps=view.max_slash_bps,
            slashed_to_payouts=spec.slashed_to == "payouts",
            harm_threshold=spec.harm_threshold,
            full_slash_at=spec.full_slash_at,
        )
        # In the contract's ascending dataset order (`settle_valuation` keeps it), each slash
        # beside its owner's consent.
        slashed = {d: a for d, a in settled.slashes.items() if a > 0}
        slashes = tuple(Slash(bytes.fromhex(d[2:]), a) for d, a in slashed.items())
        job.consents = tuple(
            SlashConsent(
                int(bodies[d]["participation_bps"]), bytes.fromhex(bodies[d]["participation"][2:])
            )
            for d in slashed
        )
        valuation["payouts_by_dataset"] = {d: str(a) for d, a in settled.payouts_by_dataset.items()}
        valuation["slashes"] = {d: str(a) for d, a in slashed.items()}
        valuation["severity_bps"] = dict(settled.severity_bps)
        return settled.payouts, slashes, settled.settlement.slashed_to_payouts


def split_pool(pool: int, owners: dict[str, int]) -> dict[str, int]:
    """The pool split in proportion to each owner's share (aggregate jobs: its number of
    participating datasets; ensembles: its models' fitted weights), one leaf per owner."""
    if not owners:
        return {}
    paid = split_by_weights(pool, owners)
    return {o: a for o, a in paid.items() if a > 0}
