"""The settlement machine (`compute.settlement`): its table, what it submits, how it retries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import UnexpectedEventError
from compute.settlement import (
    TRANSITIONS,
    Attempt,
    ConflictingSignatureError,
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
    TooManyDigestsError,
    Trigger,
    WindowClosed,
)

ME = "0x" + "22" * 20
PEERS = ["0x" + "11" * 20, "0x" + "33" * 20, "0x" + "44" * 20]
DIGEST, OTHER, THIRD = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def sig(signer: str, digest: bytes) -> bytes:
    return bytes.fromhex(signer[2:4]) * 33 + digest[:32]


def machine(quorum: int = 2, **options: float) -> Settlement:
    return Settlement(SettlementConfig(7, ME, quorum, **options))  # type: ignore[arg-type]


def decided(m: Settlement, kind: Kind = Kind.RESULT) -> Settlement:
    m.handle(Decided(kind, DIGEST, sig(ME, DIGEST)))
    return m


def peer(i: int, digest: bytes = DIGEST) -> Signed:
    return Signed(PEERS[i], digest, sig(PEERS[i], digest))


def submitted(m: Settlement, now: float = 0.0) -> Submission:
    submission = m.submission(now)
    assert submission is not None
    m.handle(Attempt())
    return submission


# --- the table --------------------------------------------------------------------------------

EVENTS: dict[type, Event] = {
    Decided: Decided(Kind.RESULT, DIGEST, sig(ME, DIGEST)),
    Signed: peer(0),
    Attempt: Attempt(),
    Mined: Mined(),
    Reverted: Reverted(1.0),
    Settled: Settled(),
    WindowClosed: WindowClosed(),
}


def in_phase(phase: Phase) -> Settlement:
    """A machine brought to `phase` by allowed events only."""
    m = machine(quorum=1)
    if phase is Phase.AWAITING_OUTCOME:
        return m
    if phase is Phase.SETTLED:
        m.handle(Settled())
        return m
    if phase is Phase.GAVE_UP:
        m.handle(WindowClosed())
        return m
    decided(m)
    if phase is Phase.SUBMITTED:
        m.handle(Attempt())
    return m


def test_every_phase_is_in_the_table_and_every_target_is_a_phase() -> None:
    sources = {phase for phase, _ in TRANSITIONS}
    assert sources == set(Phase)
    assert set(TRANSITIONS.values()) <= set(Phase)
    assert {t for _, t in TRANSITIONS if isinstance(t, Trigger)} == set(Trigger)


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("kind", list(EVENTS))
def test_the_table_decides_every_input_in_every_phase(phase: Phase, kind: type) -> None:
    m = in_phase(phase)
    assert m.phase is phase
    expected = TRANSITIONS.get((phase, kind))
    before = (m.phase, m.digest, dict(m.held), m.submissions, m.attempts)
    if expected is None:
        with pytest.raises(UnexpectedEventError):
            m.handle(EVENTS[kind])
        assert (m.phase, m.digest, dict(m.held), m.submissions, m.attempts) == before
    else:
        m.handle(EVENTS[kind])
        assert m.phase is expected


def test_a_second_decision_is_refused() -> None:
    m = decided(machine())
    with pytest.raises(UnexpectedEventError):
        m.handle(Decided(Kind.ABORT, OTHER, sig(ME, OTHER)))
    assert (m.kind, m.digest) == (Kind.RESULT, DIGEST)


def test_a_node_that_settled_before_deciding_still_signs_for_its_fee() -> None:
    m = machine()
    m.handle(Settled())
    decided(m)
    assert m.phase is Phase.SETTLED and m.signature == sig(ME, DIGEST)
    assert m.submission(0.0) is None


# --- what it submits --------------------------------------------------------------------------


def test_it_submits_every_signature_over_its_digest_in_ascending_signer_order() -> None:
    m = machine(quorum=2)
    m.handle(peer(2))
    m.handle(peer(1, OTHER))  # another digest: never counted
    assert m.submission(0.0) is None  # not decided
    decided(m)
    m.handle(peer(0))
    m.handle(peer(1))
    submission = m.submission(0.0)
    assert submission is not None
    assert submission.signers == tuple(sorted([ME, *PEERS], key=lambda a: int(a, 16)))
    assert submission.signatures == tuple(sig(s, DIGEST) for s in submission.signers)
    assert (submission.kind, submission.digest) == (Kind.RESULT, DIGEST)


def test_below_quorum_it_waits() -> None:
    m = decided(machine(quorum=3))
    m.handle(peer(0))
    assert m.submission(0.0) is None
    with pytest.raises(UnexpectedEventError):
        m.handle(Attempt())
    m.handle(peer(1))
    assert m.submission(0.0) is not None


def test_signatures_held_before_the_outcome_count_once_it_is_decided() -> None:
    m = machine(quorum=2)
    m.handle(peer(0))
    decided(m, Kind.ABORT)
    submission = m.submission(0.0)
    assert submission is not None and submission.kind is Kind.ABORT
    assert set(submission.signers) == {ME, PEERS[0]}


# --- what it holds ----------------------------------------------------------------------------


def test_one_signature_per_signer_and_digest_the_first_stands() -> None:
    m = machine()
    assert m.handle(peer(0)) == ()
    assert m.handle(peer(0)) == ()  # the same again: nothing changes
    with pytest.raises(ConflictingSignatureError):
        m.handle(Signed(PEERS[0], DIGEST, b"\x09" * 65))
    assert m.holds(PEERS[0], DIGEST) == sig(PEERS[0], DIGEST)


def test_at_most_two_digests_per_signer_and_the_second_is_evidence() -> None:
    m = machine()
    assert m.handle(peer(0, DIGEST)) == ()
    (evidence,) = m.handle(peer(0, OTHER))
    assert evidence == Equivocation(
        PEERS[0], (DIGEST, sig(PEERS[0], DIGEST)), (OTHER, sig(PEERS[0], OTHER))
    )
    with pytest.raises(TooManyDigestsError):
        m.handle(peer(0, THIRD))
    assert set(m.held[PEERS[0]]) == {DIGEST, OTHER}
    assert m.handle(peer(1, OTHER)) == ()  # other signers are not limited by it


def test_its_own_signature_is_not_taken_from_a_peer() -> None:
    m = machine()
    with pytest.raises(ValueError):
        m.handle(Signed(ME, DIGEST, sig(ME, DIGEST)))


# --- retries ----------------------------------------------------------------------------------


def test_a_revert_naming_a_signature_drops_it_and_retries_at_once() -> None:
    m = decided(machine(quorum=2))
    m.handle(peer(0))
    m.handle(peer(1))
    first = submitted(m)
    m.handle(Reverted(10.0, frozenset({PEERS[0]})))
    assert m.phase is Phase.SIGNED and m.attempts == 0
    second = m.submission(10.0)
    assert second is not None and PEERS[0] not in second.signers
    assert set(first.signers) - set(second.signers) == {PEERS[0]}


def test_a_revert_naming_nothing_backs_off_doubling_then_gives_up() -> None:
    m = decided(machine(quorum=1, max_attempts=3, backoff=2.0))
    now = 0.0
    submitted(m, now)
    m.handle(Reverted(now))
    assert m.submission(now + 1.9) is None and m.submission(now + 2.0) is not None
    now = 2.0
    submitted(m, now)
    m.handle(Reverted(now))
    assert m.submission(now + 3.9) is None and m.submission(now + 4.0) is not None
    submitted(m, now + 4.0)
    m.handle(Reverted(now + 4.0))
    assert m.phase is Phase.GAVE_UP and m.submission(1e9) is None


def test_a_peer_settling_it_after_the_node_gave_up_is_seen() -> None:
    m = decided(machine(quorum=1, max_attempts=1))
    submitted(m)
    m.handle(Reverted(0.0))
    assert m.phase is Phase.GAVE_UP
    m.handle(Settled())
    assert m.phase is Phase.SETTLED


def test_once_dropped_below_quorum_it_waits_instead_of_repeating() -> None:
    m = decided(machine(quorum=2))
    m.handle(peer(0))
    submitted(m)
    m.handle(Reverted(0.0, frozenset({PEERS[0]})))
    assert m.submission(0.0) is None  # a new signature could still make it
    m.handle(peer(1))
    assert m.submission(0.0) is not None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["peer", "other", "attempt", "revert", "revert_bad"]),
            st.integers(0, 2),
        ),
        max_size=60,
    )
)
def test_a_revert_never_repeats_forever(steps: list[tuple[str, int]]) -> None:
    """Whatever the chain answers, the number of submissions is bounded: each revert either
    drops a held signature or uses up one of `max_attempts`."""
    m = decided(machine(quorum=1, max_attempts=4, backoff=1.0))
    now = 0.0
    for what, i in steps:
        try:
            if what == "peer":
                m.handle(peer(i))
            elif what == "other":
                m.handle(peer(i, OTHER))
        except (TooManyDigestsError, ConflictingSignatureError):
            pass
        if what == "attempt" and m.submission(now) is not None:
            m.handle(Attempt())
        elif what.startswith("revert") and m.phase is Phase.SUBMITTED:
            assert m.in_flight is not None
            bad = frozenset({m.in_flight.signers[i % len(m.in_flight.signers)]})
            m.handle(Reverted(now, bad if what == "revert_bad" else frozenset()))
        now += 100.0
    assert m.submissions <= m.config.max_attempts + len(PEERS) + 1 + 1
    assert m.attempts <= m.config.max_attempts
