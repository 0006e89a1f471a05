"""The values that cross the contract boundary, as typed, immutable Python objects.

Money is `int` token base units everywhere. Addresses are checksummed strings, hashes 32-byte
`bytes`. `as_abi()` gives the tuple web3 expects for the matching Solidity struct.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class JobState(IntEnum):
    """Mirror of `Marketplace.JobState`."""

    NONE = 0
    POSTED = 1
    FINALIZED = 2
    ABORTED = 3
    EXPIRED = 4


def _bytes32(value: bytes | str, name: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"{name} must be 32 bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class JobParams:
    """What a buyer posts (`Marketplace.JobParams`). The buyer asks for a committee's size and
    quorum; the contract draws its members."""

    spec_hash: bytes
    spec_uri: str
    budget: int
    fee_bps: int
    deadline: int
    min_participants: int
    committee_size: int
    quorum: int
    max_slash_bps: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec_hash", _bytes32(self.spec_hash, "spec_hash"))

    def as_abi(self) -> tuple[Any, ...]:
        return (
            self.spec_hash,
            self.spec_uri,
            self.budget,
            self.fee_bps,
            self.deadline,
            self.min_participants,
            self.committee_size,
            self.quorum,
            self.max_slash_bps,
        )


@dataclass(frozen=True)
class Slash:
    """One provider slash inside a `Result`."""

    dataset_id: bytes
    amount: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset_id", _bytes32(self.dataset_id, "dataset_id"))

    def as_abi(self) -> tuple[bytes, int]:
        return (self.dataset_id, self.amount)


@dataclass(frozen=True)
class Result:
    """The committee's signed outcome of a job (`Marketplace.Result`, EIP-712 typed).

    Slashes are kept sorted by dataset id, as the contract requires."""

    job_id: int
    result_hash: bytes
    result_uri: str
    payout_root: bytes
    payout_total: int
    participants: int
    slashed_to_payouts: int = 0
    slashes: tuple[Slash, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "result_hash", _bytes32(self.result_hash, "result_hash"))
        object.__setattr__(self, "payout_root", _bytes32(self.payout_root, "payout_root"))
        object.__setattr__(self, "slashes", tuple(sorted(self.slashes, key=lambda s: s.dataset_id)))

    @property
    def slashed_total(self) -> int:
        return sum(s.amount for s in self.slashes)

    def as_abi(self) -> tuple[Any, ...]:
        return (
            self.job_id,
            self.result_hash,
            self.result_uri,
            self.payout_root,
            self.payout_total,
            self.slashed_to_payouts,
            self.participants,
            [s.as_abi() for s in self.slashes],
        )


@dataclass(frozen=True)
class SlashConsent:
    """A provider's signed `Participation` cap, sent along with its slash."""

    max_slash_bps: int
    signature: bytes

    def as_abi(self) -> tuple[int, bytes]:
        return (self.max_slash_bps, self.signature)


@dataclass(frozen=True)
class JobView:
    """A job as stored on chain (`Marketplace.getJob`). `committee` is the drawn committee in
    ascending order (empty until `drawCommittee`); `accepted_mask` has bit i set when
    `committee[i]` accepted the job."""

    job_id: int
    state: JobState
    buyer: str
    spec_hash: bytes
    budget: int
    fee_bps: int
    posted_at: int
    deadline: int
    min_participants: int
    quorum: int
    max_slash_bps: int
    committee: tuple[str, ...]
    result_hash: bytes
    payout_root: bytes
    unclaimed: int
    committee_size: int = 0
    accepted_mask: int = 0
    draw_block: int = 0
    accept_by: int = 0
    fee_held: int = 0

    @classmethod
    def from_abi(cls, job_id: int, raw: tuple[Any, ...]) -> JobView:
        (state, buyer, spec_hash, budget, fee_bps, posted_at, deadline, min_participants,
         quorum, max_slash_bps, committee, result_hash, payout_root, unclaimed,
         committee_size, accepted_mask, draw_block, accept_by, fee_held) = raw  # fmt: skip
        return cls(
            job_id, JobState(state), buyer, bytes(spec_hash), budget, fee_bps, posted_at,
            deadline, min_participants, quorum, max_slash_bps, tuple(committee),
            bytes(result_hash), bytes(payout_root), unclaimed, committee_size, accepted_mask,
            draw_block, accept_by, fee_held,
        )  # fmt: skip

    @property
    def drawn(self) -> bool:
        return bool(self.committee)

    @property
    def accepted(self) -> tuple[str, ...]:
        """The members that accepted the job, in committee order."""
        return tuple(m for i, m in enumerate(self.committee) if self.accepted_mask >> i & 1)

    def has_accepted(self, member: str) -> bool:
        return member in self.accepted

    def ready(self, now: int) -> bool:
        """Whether light nodes may submit (the contract's `committeeReady` at time `now`):
        drawn, a quorum accepted, and acceptance over."""
        accepted = len(self.accepted)
        return (
            self.state is JobState.POSTED
            and self.drawn
            and accepted >= self.quorum
            and (accepted == len(self.committee) or now > self.accept_by)
        )
