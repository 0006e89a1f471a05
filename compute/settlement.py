"""Settling one job on chain, as a sans-I/O state machine (in the style of `compute.round`).

The round ends in an outcome, a result or an abort. Each member signs that outcome's EIP-712
digest once, gathers its peers' signatures over the same digest, and submits them until the
chain settles the job. This module decides; the driver (`nodes.settle`) does the rest:
it checks each peer's signature the way the contract would (65 bytes, low s, v 27 or 28, an
accepted committee member) before handing it over as `Signed`, signs the node's own digest
(after recording it durably: a node never signs two digests for one job), sends transactions,
reads the chain, and supplies the time. No clock, key, disk or chain is touched here.

| phase            | input           | next             | what the node does                     |
|------------------|-----------------|------------------|----------------------------------------|
| AWAITING_OUTCOME | `Signed`        | AWAITING_OUTCOME | hold a peer's signature (bounded)      |
| AWAITING_OUTCOME | `Decided`       | SIGNED           | its kind and digest are fixed for good |
| SIGNED           | `Signed`        | SIGNED           | keep; one over its digest counts       |
| SIGNED           | `Attempt`       | SUBMITTED        | submit what `submission(now)` gave     |
| SUBMITTED        | `Signed`        | SUBMITTED        | keep                                   |
| SUBMITTED        | `Mined`         | SETTLED          | done                                   |
| SUBMITTED        | `Reverted`      | SIGNED           | drop the signatures the chain refused; |
|                  |                 |                  | back off when it named none            |
| SUBMITTED        | out of attempts | GAVE_UP          | a revert never repeats forever         |
| not SETTLED      | `Settled`       | SETTLED          | the chain settled it (a peer, perhaps) |
| AWAITING_OUTCOME, SIGNED, SUBMITTED | `WindowClosed` | GAVE_UP | too late to settle          |
| SETTLED          | `Decided`       | SETTLED          | too late to submit; signs for its fee  |
| SETTLED, GAVE_UP | `Signed`        | same             | keep (equivocation evidence)           |

Which signatures go on chain: every one the node holds over its own digest (its own included),
in ascending signer order, not just a quorum, so that the fee reaches every member that did the
work. A member whose signature was left out (it arrived late) claims its share itself.

Peers' signatures are held before the node has its own digest (a fast peer signs first), at
most one per signer and digest and at most `max_digests` distinct digests per signer; more is
refused, so a member cannot fill a node's memory. One signer with two digests for one job is
an equivocator: `handle` returns the evidence once, for the driver to keep and report.

Retries: a revert that names signatures (the chain refused them) drops them and retries at
once; each drop removes a held signature, so this ends. A revert that names none counts as a
failed attempt and backs off, `backoff × 2^(attempts - 1)` in the driver's time unit; after
`max_attempts` of them the node gives up, and the job expires unless a peer settles it.
Inputs the table does not allow raise a `ProtocolError` and change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from compute.errors import ProtocolError, UnexpectedEventError


class Kind(StrEnum):
    """What a member signs: the job's result, or its abort."""

    RESULT = "result"
    ABORT = "abort"


class Phase(StrEnum):
    AWAITING_OUTCOME = "awaiting_outcome"
    SIGNED = "signed"
    SUBMITTED = "submitted"
    SETTLED = "settled"
    GAVE_UP = "gave_up"


class Trigger(StrEnum):
    """Transitions the machine fires itself."""

    OUT_OF_ATTEMPTS = "out of attempts"


# --- errors ----------------------------------------------------------------------------------


class SignatureRefusedError(ProtocolError, ValueError):
    """A peer's signature the node does not keep; nothing changed."""


class TooManyDigestsError(SignatureRefusedError):
    """The signer already has `max_digests` distinct digests held for this job (HTTP 429)."""


class ConflictingSignatureError(SignatureRefusedError):
    """A different signature by the same signer over a digest already held (HTTP 409): the
    first one stands."""


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decided:
    """The round's outcome as this node signed it (after recording it durably)."""

    kind: Kind
    digest: bytes
    signature: bytes


@dataclass(frozen=True)
class Signed:
    """A peer's signature, already verified by the driver as the contract would."""

    signer: str
    digest: bytes
    signature: bytes


@dataclass(frozen=True)
class Attempt:
    """The driver is sending the `Submission` that `submission()` returned."""


@dataclass(frozen=True)
class Mined:
    """The settlement transaction went through."""


@dataclass(frozen=True)
class Reverted:
    """The settlement transaction reverted at time `at`; `bad` names the signers whose
    signatures the chain refused (empty when the revert names none)."""

    at: float
    bad: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Settled:
    """The chain says the job is settled (finalized, aborted or expired), by anyone."""


@dataclass(frozen=True)
class WindowClosed:
    """The chain takes no settlement for the job any more."""


Event = Decided | Signed | Attempt | Mined | Reverted | Settled | WindowClosed


# --- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """What to send on chain: `kind` over `digest`, with these signatures (ascending signers)."""

    kind: Kind
    digest: bytes
    signers: tuple[str, ...]
    signatures: tuple[bytes, ...]


@dataclass(frozen=True)
class Equivocation:
    """One signer's signatures over two different digests for one job."""

    signer: str
    first: tuple[bytes, bytes]
    """(digest, signature)"""
    second: tuple[bytes, bytes]


@dataclass(frozen=True)
class SettlementConfig:
    job_id: int
    signer: str
    """This node's address."""
    quorum: int
    max_digests: int = 2
    """Distinct digests held per signer (a result and an abort)."""
    max_attempts: int = 5
    """Reverts that name no signature before the node gives up."""
    backoff: float = 2.0
    """Wait after the first such revert, in the driver's time unit; doubles with each."""


_W, _S, _U = Phase.AWAITING_OUTCOME, Phase.SIGNED, Phase.SUBMITTED
_D, _G = Phase.SETTLED, Phase.GAVE_UP

TRANSITIONS: Final[Mapping[tuple[Phase, type[Event] | Trigger], Phase]] = MappingProxyType({
    (_W, Signed): _W,
    (_W, Decided): _S,
    (_W, Settled): _D,
    (_W, WindowClosed): _G,
    (_S, Signed): _S,
    (_S, Attempt): _U,
    (_S, Settled): _D,
    (_S, WindowClosed): _G,
    (_U, Signed): _U,
    (_U, Mined): _D,
    (_U, Reverted): _S,
    (_U, Trigger.OUT_OF_ATTEMPTS): _G,
    (_U, Settled): _D,
    (_U, WindowClosed): _G,
    (_D, Signed): _D,
    (_D, Decided): _D,
    (_G, Signed): _G,
    (_G, Settled): _D,
})  # fmt: skip
"""Every transition of a job's settlement. An input missing here is refused in that phase."""


def _ascending(signer: str) -> int:
    return int(signer, 16)


@dataclass
class Settlement:
    """One node's settlement of one job. Feed it events with `handle`; ask `submission(now)`
    what to send."""

    config: SettlementConfig
    phase: Phase = Phase.AWAITING_OUTCOME
    kind: Kind | None = None
    digest: bytes | None = None
    signature: bytes | None = None
    """This node's own signature over `digest`."""
    held: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    """Peers' signatures: signer -> digest -> signature, in arrival order."""
    refused: set[str] = field(default_factory=set)
    """Signers whose signature over `digest` the chain refused: never submitted again."""
    attempts: int = 0
    """Reverts that named no signature."""
    submissions: int = 0
    """`Attempt`s so far."""
    not_before: float = 0.0
    in_flight: Submission | None = None

    def handle(self, event: Event) -> tuple[Equivocation, ...]:
        """Take one event; the equivocation evidence it revealed (a signer's second digest).

        Raises a `ProtocolError` for an event the machine cannot take, and then changes nothing.
        """
        following = self._next(type(event))
        found: tuple[Equivocation, ...] = ()
        if isinstance(event, Signed):
            found = self._keep(event)
        elif isinstance(event, Decided):
            if event.kind not in (Kind.RESULT, Kind.ABORT):
                raise UnexpectedEventError(f"job {self.config.job_id}: unknown kind {event.kind}")
            self.kind, self.digest, self.signature = event.kind, event.digest, event.signature
        elif isinstance(event, Attempt):
            submission = self._ready()
            if submission is None:
                raise UnexpectedEventError(
                    f"job {self.config.job_id}: nothing to submit (fewer than "
                    f"{self.config.quorum} usable signatures, or backing off)"
                )
            self.in_flight = submission
            self.submissions += 1
        elif isinstance(event, Reverted):
            return self._reverted(event, following)
        self.phase = following
        if self.phase is not Phase.SUBMITTED:
            self.in_flight = None
        return found

    def submission(self, now: float) -> Submission | None:
        """What to submit at time `now`, if anything: every usable signature over this node's
        digest once it holds a quorum of them and is not backing off."""
        return self._ready() if now >= self.not_before else None

    def usable(self) -> dict[str, bytes]:
        """The signatures over this node's digest that may go on chain, by signer."""
        if self.digest is None or self.signature is None:
            return {}
        found = {
            signer: by_digest[self.digest]
            for signer, by_digest in self.held.items()
            if self.digest in by_digest and signer not in self.refused
        }
        if self.config.signer not in self.refused:
            found[self.config.signer] = self.signature
        return found

    def holds(self, signer: str, digest: bytes) -> bytes | None:
        """The signature held from `signer` over `digest`, if any."""
        if signer == self.config.signer and digest == self.digest:
            return self.signature
        return self.held.get(signer, {}).get(digest)

    # --- transitions ---

    def _ready(self) -> Submission | None:
        if self.phase is not Phase.SIGNED:
            return None
        assert self.kind is not None and self.digest is not None
        usable = self.usable()
        if len(usable) < self.config.quorum:
            return None
        signers = tuple(sorted(usable, key=_ascending))
        return Submission(self.kind, self.digest, signers, tuple(usable[s] for s in signers))

    def _next(self, trigger: type[Event] | Trigger) -> Phase:
        following = TRANSITIONS.get((self.phase, trigger))
        if following is None:
            name = trigger if isinstance(trigger, Trigger) else trigger.__name__
            raise UnexpectedEventError(
                f"job {self.config.job_id}: settlement cannot take {name} while {self.phase}"
            )
        return following

    def _keep(self, event: Signed) -> tuple[Equivocation, ...]:
        if event.signer == self.config.signer:
            raise SignatureRefusedError("this node's own signature is not taken from a peer")
        by_digest = self.held.get(event.signer, {})
        kept = by_digest.get(event.digest)
        if kept is not None:
            if kept == event.signature:
                return ()  # the same message again: nothing changes
            raise ConflictingSignatureError(
                f"{event.signer} already sent another signature over this digest for job "
                f"{self.config.job_id}; the first one stands"
            )
        if len(by_digest) >= self.config.max_digests:
            raise TooManyDigestsError(
                f"{event.signer} already signed {len(by_digest)} different digests for job "
                f"{self.config.job_id}; no more are held"
            )
        self.held.setdefault(event.signer, {})[event.digest] = event.signature
        if len(self.held[event.signer]) == 2:
            (first, second) = self.held[event.signer].items()
            return (Equivocation(event.signer, first, second),)
        return ()

    def _reverted(self, event: Reverted, following: Phase) -> tuple[Equivocation, ...]:
        assert self.in_flight is not None
        named = event.bad & set(self.in_flight.signers)
        self.in_flight = None
        if named:
            self.refused |= named  # progress: each drop removes a held signature
            self.not_before = event.at
            self.phase = following
            return ()
        self.attempts += 1
        if self.attempts >= self.config.max_attempts:
            self.phase = self._next(Trigger.OUT_OF_ATTEMPTS)
            return ()
        self.not_before = event.at + self.config.backoff * 2 ** (self.attempts - 1)
        self.phase = following
        return ()
