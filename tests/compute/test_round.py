"""The aggregation round: light and heavy nodes as sans-I/O state machines."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from compute import field
from compute.encoding import FieldSpec
from compute.errors import (
    DuplicateMessageError,
    DuplicateSubmissionError,
    LateSubmissionError,
    MalformedMessageError,
    ProtocolError,
    UnexpectedEventError,
    WrongJobError,
)
from compute.messages import (
    Agreement,
    CloseSubmissions,
    Outcome,
    Partial,
    PeerUnavailable,
    Result,
    RoundConfig,
    Statistic,
    Submission,
)
from compute.reduce import Abort, AbortReason, ReduceOp, Reduction
from compute.round import TRANSITIONS, HeavyNodeRound, LightNodeRound, Phase, Trigger
from compute.sharing import AdditiveScheme, Scheme, ShamirScheme
from compute.simulation import Faults, simulate_round

SPEC = FieldSpec("x", -100.0, 100.0, scale=2**10)
SUM = Reduction(ReduceOp.SUM, SPEC, width=3)


def config(scheme: Scheme, minimum: int = 2, **kwargs: Any) -> RoundConfig:
    return RoundConfig("job-1", SUM, scheme, min_participants=minimum, **kwargs)


def datasets(count: int, seed: int = 0) -> dict[str, NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    return {f"ds-{i:04d}": rng.integers(-50, 50, size=(2, 3)).astype(float) for i in range(count)}


def clear_sum(
    data: dict[str, NDArray[np.float64]], only: Iterable[str] | None = None
) -> list[float]:
    kept = None if only is None else set(only)
    chosen = [v for k, v in data.items() if kept is None or k in kept]
    total: list[float] = np.sum([v.sum(axis=0) for v in chosen], axis=0).tolist()
    return total


def results(outcomes: Mapping[int, Outcome]) -> list[Result]:
    done = [o for o in outcomes.values() if isinstance(o, Result)]
    assert len(done) == len(outcomes), outcomes
    return done


# --- the whole round ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme", [AdditiveScheme(3), AdditiveScheme(5), ShamirScheme(3, 2), ShamirScheme(5, 3)]
)
def test_every_heavy_node_finalizes_the_same_result(scheme: Scheme) -> None:
    data = datasets(12)
    outcomes = simulate_round(config(scheme), data, np.random.default_rng(0))
    assert sorted(outcomes) == list(range(1, scheme.n + 1))
    for result in results(outcomes):
        assert result.values.tolist() == clear_sum(data)
        assert result.participants == tuple(sorted(data))
        assert result.aggregate.holders == tuple(range(1, scheme.n + 1))
        assert result.privacy is None


def test_a_thousand_light_nodes_in_one_process() -> None:
    data = {f"ds-{i}": np.array([[i % 7, -i % 5, 1.0]]) for i in range(1000)}
    outcomes = simulate_round(config(ShamirScheme(3, 2), 1000), data, np.random.default_rng(1))
    for result in results(outcomes):
        assert result.values.tolist() == clear_sum(data)
        assert len(result.participants) == 1000


@pytest.mark.parametrize(
    ("scheme", "offline"),
    [(ShamirScheme(3, 2), {3}), (ShamirScheme(3, 2), {1}), (ShamirScheme(5, 3), {2, 4})],
)
def test_heavy_node_dropouts_within_tolerance_still_finalize(
    scheme: Scheme, offline: set[int]
) -> None:
    data = datasets(5)
    faults = Faults(offline=frozenset(offline))
    outcomes = simulate_round(config(scheme), data, np.random.default_rng(2), faults=faults)
    assert set(outcomes) == set(range(1, scheme.n + 1)) - offline
    for result in results(outcomes):
        assert result.values.tolist() == clear_sum(data)
        assert set(result.aggregate.holders).isdisjoint(offline)


@pytest.mark.parametrize(
    ("scheme", "offline"),
    [(AdditiveScheme(3), {2}), (ShamirScheme(3, 2), {1, 2}), (ShamirScheme(5, 3), {1, 2, 5})],
)
def test_too_many_heavy_node_dropouts_abort(scheme: Scheme, offline: set[int]) -> None:
    outcomes = simulate_round(
        config(scheme), datasets(5), np.random.default_rng(3), faults=Faults(frozenset(offline))
    )
    for outcome in outcomes.values():
        assert isinstance(outcome, Abort)
        assert outcome.reason is AbortReason.TOO_FEW_HEAVY_NODES


def test_a_submission_lost_on_the_way_leaves_the_participant_set() -> None:
    data = datasets(4)
    faults = Faults(lost={"ds-0001": frozenset({2})})
    outcomes = simulate_round(
        config(AdditiveScheme(3), 3), data, np.random.default_rng(4), faults=faults
    )
    kept = {"ds-0000", "ds-0002", "ds-0003"}
    for result in results(outcomes):
        assert set(result.participants) == kept
        assert result.values.tolist() == clear_sum(data, kept)


def test_below_the_participant_minimum_the_round_aborts() -> None:
    faults = Faults(lost={"ds-0001": frozenset({2}), "ds-0002": frozenset({1})})
    outcomes = simulate_round(
        config(ShamirScheme(3, 2), 3), datasets(4), np.random.default_rng(5), faults=faults
    )
    for outcome in outcomes.values():
        assert isinstance(outcome, Abort)
        assert outcome.reason is AbortReason.TOO_FEW_PARTICIPANTS
        assert "needs at least 3" in outcome.detail


def _plus_one(value: NDArray[np.uint64]) -> NDArray[np.uint64]:
    return field.add(value, np.uint64(1))


def test_a_cheating_heavy_node_is_named_when_the_committee_has_the_redundancy() -> None:
    faults = Faults(tamper={3: _plus_one})
    outcomes = simulate_round(
        config(ShamirScheme(4, 2)), datasets(6), np.random.default_rng(6), faults=faults
    )
    for honest in (1, 2, 4):
        outcome = outcomes[honest]
        assert isinstance(outcome, Abort)
        assert outcome.reason is AbortReason.INCONSISTENT_SHARES
        assert outcome.culprit == 3


def test_in_two_of_three_a_cheat_is_detected_and_each_honest_node_lists_suspects() -> None:
    faults = Faults(tamper={3: _plus_one})
    outcomes = simulate_round(
        config(ShamirScheme(3, 2)), datasets(6), np.random.default_rng(7), faults=faults
    )
    first = outcomes[1]
    assert isinstance(first, Abort)
    assert first == Abort(AbortReason.INCONSISTENT_SHARES, first.detail, (), suspects=(2, 3))
    second = outcomes[2]
    assert isinstance(second, Abort) and second.suspects == (1, 3)
    # The suspects the honest nodes have in common is the cheater.
    assert set(first.suspects) & set(second.suspects) == {3}


def test_additive_sharing_is_semi_honest_a_wrong_partial_goes_unnoticed() -> None:
    faults = Faults(tamper={2: lambda v: v + np.uint64(1024)})  # +1.0 at scale 2^10
    data = datasets(3)
    outcomes = simulate_round(
        config(AdditiveScheme(3)), data, np.random.default_rng(8), faults=faults
    )
    assert results(outcomes)[0].values.tolist() == [x + 1 for x in clear_sum(data)]


# --- delivery order does not matter -------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(
        [AdditiveScheme(3), ShamirScheme(3, 2), ShamirScheme(4, 2), ShamirScheme(5, 3)]
    ),
    st.integers(min_value=0, max_value=2),
    st.randoms(use_true_random=False),
)
def test_any_delivery_order_and_tolerated_dropouts_give_the_same_result(
    scheme: Scheme, drop: int, order: random.Random
) -> None:
    offline = set(order.sample(range(1, scheme.n + 1), min(drop, scheme.n - scheme.threshold)))
    data = datasets(5, seed=order.randrange(100))
    cfg = config(scheme)
    rng = np.random.default_rng(order.randrange(2**32))
    nodes = {n: HeavyNodeRound(cfg, n, rng) for n in cfg.committee if n not in offline}
    pending: list[Any] = []
    for dataset_id, values in data.items():
        pending += [s for s in LightNodeRound(cfg, dataset_id).submit(values, rng)]
    for node in nodes:
        pending += [(node, CloseSubmissions(cfg.job_id))]
        pending += [(node, PeerUnavailable(cfg.job_id, peer)) for peer in offline]
    while pending:
        item = pending.pop(order.randrange(len(pending)))
        if isinstance(item, tuple):
            target, event = item
        else:
            target, event = item.recipient, item
        if target not in nodes:
            continue
        if isinstance(event, Submission) and nodes[target].phase is not Phase.COLLECTING:
            with pytest.raises(LateSubmissionError):
                nodes[target].handle(event)
            continue
        pending += nodes[target].handle(event)
    outcomes = [node.outcome for node in nodes.values()]
    # Submissions refused as late shrink a node's view; the intersection keeps nodes in step.
    aborts = [o for o in outcomes if isinstance(o, Abort)]
    if aborts:
        assert len(aborts) == len(outcomes)
        assert {o.reason for o in aborts} == {AbortReason.TOO_FEW_PARTICIPANTS}
        return
    done = [o for o in outcomes if isinstance(o, Result)]
    assert len(done) == len(outcomes)
    totals = {tuple(o.aggregate.total.tolist()) for o in done}
    participants = {o.participants for o in done}
    assert len(totals) == 1 and len(participants) == 1
    assert done[0].values.tolist() == clear_sum(data, participants.pop())


# --- the state table and the errors at the boundary -----------------------------------------------


def test_the_transition_table() -> None:
    phases = {phase for phase, _ in TRANSITIONS} | set(TRANSITIONS.values())
    assert phases == set(Phase)
    for terminal in (Phase.DONE, Phase.ABORTED):
        late = {Agreement, Statistic, Partial, PeerUnavailable}
        assert {i for p, i in TRANSITIONS if p is terminal} == late
        assert all(TRANSITIONS[(p, i)] is terminal for p, i in TRANSITIONS if p is terminal)
    assert TRANSITIONS[(Phase.COLLECTING, CloseSubmissions)] is Phase.AGREEING
    assert TRANSITIONS[(Phase.AGREEING, Trigger.VIEWS_COMPLETE)] is Phase.COMBINING
    assert TRANSITIONS[(Phase.COMBINING, Trigger.PARTIALS_COMPLETE)] is Phase.DONE
    assert TRANSITIONS[(Phase.AGREEING, Trigger.FIT_WEIGHTS)] is Phase.FITTING
    assert TRANSITIONS[(Phase.FITTING, Trigger.STATISTICS_COMPLETE)] is Phase.COMBINING
    assert TRANSITIONS[(Phase.FITTING, Trigger.EVALUATE_BLENDS)] is Phase.SELECTING
    assert TRANSITIONS[(Phase.SELECTING, Trigger.BLENDS_COMPLETE)] is Phase.COMBINING
    assert (Phase.SELECTING, Submission) not in TRANSITIONS
    assert (Phase.AGREEING, Submission) not in TRANSITIONS


def _share_for(cfg: RoundConfig, dataset_id: str, node: int) -> Submission:
    rng = np.random.default_rng(0)
    return LightNodeRound(cfg, dataset_id).submit([[1.0, 2.0, 3.0]], rng)[node - 1]


def test_protocol_errors_leave_the_node_unchanged() -> None:
    cfg = config(ShamirScheme(3, 2))
    node = HeavyNodeRound(cfg, 1, np.random.default_rng(0))
    node.handle(_share_for(cfg, "a", 1))
    bad_events: list[tuple[object, type[ProtocolError]]] = [
        (_share_for(cfg, "a", 1), DuplicateSubmissionError),
        (_share_for(cfg, "b", 2), WrongJobError),
        (Submission("job-2", "b", 1, np.zeros(3, np.uint64)), WrongJobError),
        (Submission("job-1", "b", 1, np.zeros(4, np.uint64)), MalformedMessageError),
        (Submission("job-1", "b", 1, np.zeros(3, np.int64)), MalformedMessageError),
        (PeerUnavailable("job-1", 1), MalformedMessageError),
        (Agreement("job-1", 9, 1, frozenset()), MalformedMessageError),
    ]
    for event, error in bad_events:
        with pytest.raises(error):
            node.handle(event)  # type: ignore[arg-type]
        assert node.phase is Phase.COLLECTING and node.dataset_ids == {"a"}
    out = node.handle(CloseSubmissions("job-1"))
    assert [(m.recipient, m.dataset_ids) for m in out if isinstance(m, Agreement)] == [
        (2, frozenset({"a"})),
        (3, frozenset({"a"})),
    ]
    with pytest.raises(LateSubmissionError, match="deadline has passed"):
        node.handle(_share_for(cfg, "b", 1))
    with pytest.raises(UnexpectedEventError, match="CloseSubmissions"):
        node.handle(CloseSubmissions("job-1"))
    node.handle(Agreement("job-1", 2, 1, frozenset({"a"})))
    with pytest.raises(DuplicateMessageError):
        node.handle(Agreement("job-1", 2, 1, frozenset({"a"})))
    assert node.phase is Phase.AGREEING


def test_light_node_shares_once_and_resends_the_same_messages() -> None:
    cfg = config(AdditiveScheme(3))
    light = LightNodeRound(cfg, "a")
    assert light.messages is None
    sent = light.submit([[1.0, 2.0, 3.0]], np.random.default_rng(0))
    assert [m.recipient for m in sent] == [1, 2, 3] and light.messages is sent
    with pytest.raises(UnexpectedEventError, match="resend"):
        light.submit([[1.0, 2.0, 3.0]], np.random.default_rng(1))


@pytest.mark.parametrize("scheme", [AdditiveScheme(3), ShamirScheme(3, 2), ShamirScheme(5, 3)])
def test_shares_that_are_pure_randomness_travel_as_seeds(scheme: Scheme) -> None:
    """Seed compression: t - 1 (Shamir) or n - 1 (additive) holders get a 16-byte seed, the
    rest a vector; each seeded share is its seed's expansion, and the shares reconstruct."""
    sent = LightNodeRound(config(scheme), "ds-7").submit(
        [[1.0, 2.0, 3.0]], np.random.default_rng(0)
    )
    seeded = {m.recipient for m in sent if m.seed is not None}
    assert len(seeded) == (
        scheme.n - 1 if isinstance(scheme, AdditiveScheme) else scheme.threshold - 1
    )
    for m in sent:
        if m.seed is not None:
            assert len(m.seed) == 16
            assert np.array_equal(m.share, scheme.seed_share(m.seed, m.share.shape))
    expected = SUM.contribution([[1.0, 2.0, 3.0]])
    assert np.array_equal(scheme.reconstruct({m.recipient: m.share for m in sent}), expected)
    short = Reduction(ReduceOp.SUM, SPEC, width=1)  # shorter than a seed: vectors only
    short_config = RoundConfig("job-1", short, scheme, min_participants=2)
    plain = LightNodeRound(short_config, "ds-7").submit([[1.0]], np.random.default_rng(0))
    assert all(m.seed is None for m in plain)


def test_late_messages_after_the_outcome_are_ignored() -> None:
    cfg = config(ShamirScheme(3, 2), minimum=1)
    node = HeavyNodeRound(cfg, 1, np.random.default_rng(0))
    node.handle(_share_for(cfg, "a", 1))
    node.handle(PeerUnavailable("job-1", 2))
    node.handle(CloseSubmissions("job-1"))
    out = node.handle(Agreement("job-1", 3, 1, frozenset({"a"})))
    (sent,) = out
    assert isinstance(sent, Partial) and node.phase is Phase.COMBINING
    node.handle(Partial("job-1", 3, 1, sent.participants, (), sent.value))
    assert node.outcome is not None and node.phase.value == "done"
    assert node.handle(Partial("job-1", 2, 1, ("a",), (), sent.value)) == []
    assert node.handle(PeerUnavailable("job-1", 3)) == []
    assert node.phase.value == "done"


def test_partials_over_a_different_participant_set_are_not_combined() -> None:
    cfg = config(ShamirScheme(3, 2), minimum=1)
    node = HeavyNodeRound(cfg, 1, np.random.default_rng(0))
    node.handle(_share_for(cfg, "a", 1))
    node.handle(CloseSubmissions("job-1"))
    node.handle(Agreement("job-1", 2, 1, frozenset({"a"})))
    node.handle(PeerUnavailable("job-1", 3))
    value = np.zeros(3, dtype=np.uint64)
    node.handle(Partial("job-1", 2, 1, ("a", "b"), (), value))
    assert isinstance(node.outcome, Abort)
    assert node.outcome.reason is AbortReason.DIVERGENT_VIEWS


def test_nodes_out_of_the_committee_are_refused() -> None:
    with pytest.raises(MalformedMessageError):
        HeavyNodeRound(config(AdditiveScheme(3)), 4, random.Random())  # type: ignore[arg-type]
