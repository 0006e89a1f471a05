"""The heavy node's settlement driver: `compute.settlement.Settlement` wired to a key, the store
and the chain.

- **Signing, once.** `decide` records the node's decision (kind, digest, and the message
  itself) in the store's slashing-protection table before it signs; the store refuses any
  other digest for the job (`DoubleSigning`), so no code path returns a second signature. A
  restarted node takes its decision back from the store instead of deriving it again.
- **Peers' signatures** arrive verified by the HTTP handler (strict ECDSA, an accepted member);
  `take` lets the machine bound and keep them, then logs them, in arrival order.
- **Submitting** (`step`, from the node's tick): every settlement attempt is logged before the
  transaction is sent and its answer after; a revert that names signatures drops them, any
  other backs off, and a bounded number of those ends in giving up (`compute.settlement`).
- **Evidence**: a member that signed two digests for the job is kept in the log; when the
  node holds both messages (its own result and an abort, whose reasons are a known set) it
  reports it on chain with `reportAbortEquivocation`.
- **Fees**: after finalization, a node whose signature was left out of the `finalize` call
  (no `FeePaid` to it for that job) claims its share with `claimFee`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount

from compute.errors import ProtocolError
from compute.reduce import AbortReason
from compute.settlement import (
    Attempt,
    Decided,
    Equivocation,
    Event,
    Kind,
    Mined,
    Phase,
    Reverted,
    Settled,
    Settlement,
    SettlementConfig,
    Signed,
    Submission,
    WindowClosed,
)
from market.chain import ContractRevert
from market.chain import errors as E
from market.escrow import EscrowClient, JobState, JobView, Result, Slash, SlashConsent
from market.escrow.eip712 import abort_digest, sign_digest
from nodes.store import Entry, Input, Store

log = logging.getLogger("market.heavy")


def result_json(r: Result) -> dict[str, Any]:
    """A `Result` as the JSON members send beside their signatures (and keep in the store)."""
    return {
        "job": r.job_id,
        "result_hash": r.result_hash.hex(),
        "result_uri": r.result_uri,
        "payout_root": r.payout_root.hex(),
        "payout_total": str(r.payout_total),
        "participants": r.participants,
        "slashed_to_payouts": str(r.slashed_to_payouts),
        "slashes": [[s.dataset_id.hex(), str(s.amount)] for s in r.slashes],
    }


def result_from_json(r: dict[str, Any]) -> Result:
    """The inverse of `result_json`; raises `KeyError`, `TypeError` or `ValueError`."""
    return Result(
        job_id=int(r["job"]),
        result_hash=bytes.fromhex(r["result_hash"]),
        result_uri=str(r["result_uri"]),
        payout_root=bytes.fromhex(r["payout_root"]),
        payout_total=int(r["payout_total"]),
        participants=int(r["participants"]),
        slashed_to_payouts=int(r["slashed_to_payouts"]),
        slashes=tuple(Slash(bytes.fromhex(d), int(a)) for d, a in r["slashes"]),
    )


@dataclass(frozen=True)
class Decision:
    """What this node signs for a job: a result (with the consents its slashes need and the
    result document) or an abort reason."""

    kind: Kind
    digest: bytes
    result: Result | None = None
    consents: tuple[SlashConsent, ...] = ()
    document: bytes | None = None
    reason: str = ""

    def message(self) -> dict[str, Any]:
        """The signed message as JSON, kept beside the digest."""
        if self.result is None:
            return {"reason": self.reason}
        return {
            "result": result_json(self.result),
            "consents": [[c.max_slash_bps, c.signature.hex()] for c in self.consents],
        }

    @classmethod
    def from_message(
        cls, kind: str, digest: bytes, message: dict[str, Any], document: bytes | None
    ) -> Decision:
        if Kind(kind) is Kind.ABORT:
            return cls(Kind.ABORT, digest, reason=str(message["reason"]))
        result = result_from_json(message["result"])
        consents = tuple(SlashConsent(int(b), bytes.fromhex(s)) for b, s in message["consents"])
        return cls(Kind.RESULT, digest, result, consents, document)


@dataclass
class JobSettlement:
    """A job's settlement as this node runs it."""

    machine: Settlement
    decision: Decision | None = None
    evidence: list[Equivocation] = field(default_factory=list)
    """Equivocations not yet reported (or found unreportable)."""
    results: dict[bytes, Result] = field(default_factory=dict)
    """Results peers sent beside their signatures, by digest (checked against it): what this
    node needs to report a member that signed two different results."""
    fee_checked: bool = False

    @property
    def phase(self) -> Phase:
        return self.machine.phase


class Settler:
    """Settles the jobs of one heavy node. Every method that changes a job's settlement takes
    `lock` (the node's) while it does; transactions are sent without it."""

    def __init__(
        self, account: LocalAccount, escrow: EscrowClient, store: Store, lock: threading.RLock
    ) -> None:
        self.account = account
        self.address = account.address
        self.escrow = escrow
        self.store = store
        self.lock = lock

    # ------------------------------------------------------------------------- building
    def open(self, view: JobView) -> JobSettlement:
        """A job's settlement, with the decision the store holds for it (if the node decided
        before a restart: it is never derived again)."""
        job = JobSettlement(Settlement(SettlementConfig(view.job_id, self.address, view.quorum)))
        held = self.store.protected(view.job_id)
        if held is not None:
            decision = Decision.from_message(held.kind, held.digest, held.message, held.document)
            signature = held.signature or self._sign(view.job_id, decision)
            job.decision = decision
            job.machine.handle(Decided(decision.kind, decision.digest, signature))
        return job

    def replay(self, job: JobSettlement, entry: Entry) -> None:
        """Feed back one logged settlement input."""
        body = entry.body
        event: Event
        if entry.kind is Input.SIGNATURE:
            event = Signed(
                body["signer"], bytes.fromhex(body["digest"]), bytes.fromhex(body["signature"])
            )
            if body.get("result") is not None:
                job.results[event.digest] = result_from_json(body["result"])
        elif entry.kind is Input.ATTEMPT:
            event = Attempt()
        elif entry.kind is Input.MINED:
            event = Mined()
        elif entry.kind is Input.REVERTED:
            event = Reverted(float(body["at"]), frozenset(body["bad"]))
        elif entry.kind is Input.SETTLED:
            event = Settled()
        elif entry.kind is Input.WINDOW_CLOSED:
            event = WindowClosed()
        else:
            raise ValueError(f"{entry.kind} is not a settlement input")
        try:
            job.evidence.extend(job.machine.handle(event))
        except ProtocolError as exc:  # logged before the restart; the machine moved on
            log.warning("job %s: replaying %s: %s", job.machine.config.job_id, entry.kind, exc)

    # ------------------------------------------------------------------------- inputs
    def decide(self, job: JobSettlement, decision: Decision) -> bytes:
        """Sign the round's outcome, once: recorded before it is signed. Returns the signature
        (to send to the peers)."""
        job_id = job.machine.config.job_id
        with self.lock:
            signature = self._sign(job_id, decision)
            job.machine.handle(Decided(decision.kind, decision.digest, signature))
            job.decision = decision
        return signature

    def _sign(self, job_id: int, decision: Decision) -> bytes:
        # Recorded first: a crash after this line re-signs the same digest, never another.
        self.store.protect(
            job_id, decision.kind.value, decision.digest, decision.message(), decision.document
        )
        signature = sign_digest(self.account, decision.digest)
        self.store.set_signature(job_id, decision.digest, signature)
        return signature

    def take(self, job: JobSettlement, signed: Signed, result: Result | None = None) -> bool:
        """Keep a verified peer signature (and the `result` it signs, checked by the caller to
        hash to its digest); False when it is already held. Raises the machine's
        `SignatureRefusedError` (too many digests from that signer, or a conflicting
        signature) and then keeps nothing."""
        job_id = job.machine.config.job_id
        with self.lock:
            if job.machine.holds(signed.signer, signed.digest) == signed.signature:
                return False
            found = job.machine.handle(signed)
            self.store.append(
                job_id,
                Input.SIGNATURE,
                f"{signed.signer}:{signed.digest.hex()}",
                {
                    "signer": signed.signer,
                    "digest": signed.digest.hex(),
                    "signature": signed.signature.hex(),
                    "result": None if result is None else result_json(result),
                },
            )
            if result is not None:
                job.results[signed.digest] = result
            job.evidence.extend(found)
        for evidence in found:
            log.warning(
                "job %s: %s signed two digests (0x%s and 0x%s): kept as evidence",
                job_id, evidence.signer, evidence.first[0].hex(), evidence.second[0].hex(),
            )  # fmt: skip
        return True

    # ------------------------------------------------------------------------- the tick
    def step(self, job: JobSettlement, now: float) -> None:
        """One pass: learn whether the chain settled the job, submit what is due, report
        evidence, claim a fee the `finalize` call left out."""
        job_id = job.machine.config.job_id
        if job.phase in (Phase.AWAITING_OUTCOME, Phase.SIGNED, Phase.SUBMITTED):
            if self.escrow.job_state(job_id) is not JobState.POSTED:
                self._record(job, Input.SETTLED, "", {}, Settled())
        if job.phase is Phase.SUBMITTED:  # sent before a crash; what the chain said was lost
            attempt = str(job.machine.submissions - 1)
            self._record(job, Input.REVERTED, attempt, {"at": now, "bad": []}, Reverted(now))
        with self.lock:
            submission = job.machine.submission(now)
            if submission is not None:
                attempt = str(job.machine.submissions)
                job.machine.handle(Attempt())
                self.store.append(job_id, Input.ATTEMPT, attempt)
        if submission is not None:
            self._submit(job, submission, attempt, now)
        if job.evidence:
            self._report(job)
        if job.phase is Phase.SETTLED and not job.fee_checked:
            self._claim_fee(job)

    def _record(self, job: JobSettlement, kind: Input, key: str, body: dict[str, Any],
                event: Event) -> None:  # fmt: skip
        with self.lock:
            job.machine.handle(event)
            self.store.append(job.machine.config.job_id, kind, key, body)

    def _submit(self, job: JobSettlement, submission: Submission, attempt: str, now: float) -> None:
        decision = job.decision
        assert decision is not None  # SIGNED
        job_id = job.machine.config.job_id
        signatures = list(submission.signatures)
        try:
            if decision.kind is Kind.RESULT:
                assert decision.result is not None
                self.escrow.finalize(self.account, decision.result, signatures, decision.consents)
            else:
                self.escrow.abort(self.account, job_id, decision.reason, signatures)
        except E.MarketplaceJobNotPosted:
            log.info("job %s: settled on chain by a peer", job_id)
            self._record(job, Input.SETTLED, "", {}, Settled())  # a peer settled it first
        except E.MarketplaceSettlementClosed:
            log.error("job %s: its settlement window closed before it settled", job_id)
            self._record(job, Input.WINDOW_CLOSED, "", {}, WindowClosed())
        except ContractRevert as exc:
            bad = refused_signers(exc, submission)
            log.error("job %s: %s reverted: %s%s", job_id, decision.kind, exc,
                      f" (dropping {sorted(bad)})" if bad else "")  # fmt: skip
            body = {"at": now, "bad": sorted(bad)}
            self._record(job, Input.REVERTED, attempt, body, Reverted(now, frozenset(bad)))
        else:
            self._record(job, Input.MINED, attempt, {}, Mined())
            log.info("job %s: %s mined with %d signatures%s", job_id, decision.kind,
                     len(signatures), "; each signer's fee share is paid"
                     if decision.kind is Kind.RESULT else "")  # fmt: skip

    def _report(self, job: JobSettlement) -> None:
        """Report each equivocation the node holds both messages of: two results (its own, or
        those peers sent beside their signatures), or a result and an abort (whose reasons are
        a known set); keep the others as evidence in the log."""
        job_id = job.machine.config.job_id
        known: dict[bytes, Result | str] = {
            abort_digest(self.escrow.domain, job_id, r.value): r.value for r in AbortReason
        }
        known.update(job.results)
        if job.decision is not None and job.decision.result is not None:
            known[job.decision.digest] = job.decision.result
        for evidence in list(job.evidence):
            a, b = known.get(evidence.first[0]), known.get(evidence.second[0])
            if a is None or b is None or (isinstance(a, str) and isinstance(b, str)):
                if job.decision is None:
                    continue  # this node's own result may yet be one of them
                job.evidence.remove(evidence)
                log.warning("job %s: %s's two signatures are kept as evidence; this node "
                            "does not hold both messages to report them", job_id,
                            evidence.signer)  # fmt: skip
                continue
            job.evidence.remove(evidence)
            if self.escrow.equivocation_reported(job_id, evidence.signer):
                continue
            (first, sig_first), (second, sig_second) = (
                (a, evidence.first[1]),
                (b, evidence.second[1]),
            )
            try:
                if isinstance(first, Result) and isinstance(second, Result):
                    self.escrow.report_equivocation(
                        self.account, first, sig_first, second, sig_second
                    )
                    what = "two different results"
                else:
                    if isinstance(first, str):  # the result first, then the abort
                        (first, sig_first), (second, sig_second) = (
                            (second, sig_second),
                            (first, sig_first),
                        )
                    assert isinstance(first, Result) and isinstance(second, str)
                    self.escrow.report_abort_equivocation(
                        self.account, first, sig_first, second, sig_second
                    )
                    what = "a result and an abort"
                log.warning("job %s: reported %s for signing %s", job_id, evidence.signer, what)
            except ContractRevert as exc:
                log.error("job %s: reporting %s failed: %s", job_id, evidence.signer, exc)

    def _claim_fee(self, job: JobSettlement) -> None:
        decision = job.decision
        if decision is None or decision.result is None:
            return  # nothing signed (yet), or an abort: no fee
        job.fee_checked = True
        job_id = job.machine.config.job_id
        view = self.escrow.job(job_id)
        if view.state is not JobState.FINALIZED or view.result_hash != decision.result.result_hash:
            return
        if self.escrow.fee_paid(job_id, self.address):
            return
        signature = job.machine.signature
        assert signature is not None
        try:
            self.escrow.claim_fee(self.account, job_id, signature)
            log.info("job %s: claimed the fee share the finalize call left out", job_id)
        except ContractRevert as exc:
            log.error("job %s: claiming its fee share failed: %s", job_id, exc)


def refused_signers(exc: ContractRevert, submission: Submission) -> set[str]:
    """The signers whose signatures a settlement revert names (none for other reverts)."""
    values = exc.values
    if isinstance(exc, E.MarketplaceInvalidSignature | E.MarketplaceSignaturesNotSorted):
        index = int(values["index"])
        return {submission.signers[index]} if index < len(submission.signers) else set()
    if isinstance(exc, E.MarketplaceSignerNotAccepted | E.MarketplaceSignerNotInCommittee):
        return {str(values["signer"])}
    return set()
