"""How many values were clipped: a total over the providers, counted under sharing like the rest
of the aggregate (each contribution's last word), and with DP noised from the same budget."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute import dp
from compute.encoding import FieldSpec
from compute.errors import ReductionError
from compute.messages import Result, RoundConfig
from compute.proposal import parse_proposal
from compute.reduce import CLIPPING_OPS, Aggregate, ReduceOp, Reduction
from compute.sharing import AdditiveScheme, Scheme, ShamirScheme
from compute.simulation import simulate_round
from tests.compute.strategies import schemes, seeds
from tests.compute.test_proposal import at, chain, example
from tests.compute.test_reduce import run

SPEC = FieldSpec("x", -5.0, 5.0, scale=2**12)

providers = st.dictionaries(
    st.text("abc", min_size=1, max_size=3),
    st.integers(min_value=1, max_value=6).flatmap(
        lambda m: st.lists(
            st.lists(st.floats(-8, 8, allow_nan=False), min_size=2, max_size=2),
            min_size=m,
            max_size=m,
        )
    ),
    min_size=1,
    max_size=6,
)
"""Providers' records (width 2), some values outside [-5, 5]."""


def outside(records: object) -> int:
    array = np.asarray(records, dtype=float).reshape(-1)
    return int(((array < SPEC.lo) | (array > SPEC.hi)).sum())


@settings(max_examples=40)
@given(schemes, providers, seeds)
def test_the_total_clipped_is_reconstructed_under_sharing(
    scheme: Scheme, datasets: dict[str, list[list[float]]], seed: int
) -> None:
    expected = sum(outside(v) for v in datasets.values())
    for op in (ReduceOp.SUM, ReduceOp.MEAN, ReduceOp.VARIANCE):
        counting = Reduction(op, SPEC, width=2, count_clipped=True)
        outcome = run(counting, scheme, datasets, seed)
        assert isinstance(outcome, Aggregate)
        assert outcome.clipped == expected
        # The values and the record count are what they are without the extra word.
        plain = run(Reduction(op, SPEC, width=2), scheme, datasets, seed)
        assert isinstance(plain, Aggregate)
        np.testing.assert_array_equal(outcome.values, plain.values)
        assert outcome.count == plain.count
        assert plain.clipped is None
    column = {d: np.asarray(v, dtype=float)[:, 0] for d, v in datasets.items()}
    histogram = Reduction(ReduceOp.HISTOGRAM, SPEC, bins=5, count_clipped=True)
    outcome = run(histogram, scheme, column, seed)
    assert isinstance(outcome, Aggregate)
    assert outcome.clipped == sum(outside(v) for v in column.values())
    assert len(outcome.values) == 5 and outcome.values.sum() == sum(len(v) for v in column.values())


def test_each_contribution_carries_its_own_count_as_one_more_shared_word() -> None:
    reduction = Reduction(ReduceOp.MEAN, SPEC, width=2, count_clipped=True)
    contribution = reduction.contribution([[1.0, 9.0], [-7.0, np.inf], [0.0, 5.0]])
    assert reduction.length == 4 and contribution.shape == (4,)
    assert contribution[-2] == 3 and contribution[-1] == 3  # records, then values outside
    assert [g.name for g in reduction.groups()] == ["sum", "count", "clipped"]
    # One record moves the count by at most its width: the slice's bound.
    assert reduction.groups()[-1].l1 == 2


def test_only_ops_that_clip_count_and_proposals_always_count_them() -> None:
    for op in set(ReduceOp) - CLIPPING_OPS:
        with pytest.raises(ReductionError, match="clips no values"):
            Reduction(op, SPEC, count_clipped=True)
    assert parse_proposal(example()).reduction().count_clipped
    count = chain(
        at("map.function", "row_count"), at("map.output.fields", []), at("reduce.op", "count")
    )(example())
    assert not parse_proposal(count).reduction().count_clipped


@pytest.mark.parametrize(("scheme", "threshold"), [("additive", None), ("shamir", 2)])
def test_a_proposals_round_releases_the_total_and_no_providers_count(
    scheme: str, threshold: int | None
) -> None:
    raw = chain(
        at("reduce.scheme", scheme),
        at("reduce.threshold", threshold),
        at("reduce.threat_model", "semi-honest"),
    )(example())
    proposal = parse_proposal(raw)
    config = proposal.round_config("job")
    rng = np.random.default_rng(3)
    # Pressures and pulses, some above the proposal's 250 (a typo'd 1360) or below 0.
    datasets = {
        f"clinic{i}": np.column_stack([rng.normal(130, 80, 40), rng.normal(70, 120, 40)])
        for i in range(4)
    }
    expected = sum(int(((v < 0) | (v > 250)).sum()) for v in datasets.values())
    assert expected > 0
    outcomes = simulate_round(config, datasets, rng)
    assert len(outcomes) == 3
    for outcome in outcomes.values():
        assert isinstance(outcome, Result)
        assert outcome.aggregate.clipped == expected
        clipped = np.concatenate([np.clip(v, 0, 250) for v in datasets.values()])
        np.testing.assert_allclose(outcome.values, clipped.mean(axis=0), atol=1e-3)
    # What travels and is combined is the sum of the contributions: each provider's own count
    # exists only inside its contribution, shared (a test in test_sharing shows fewer than the
    # threshold shares are independent of the secret).
    totals = {tuple(o.aggregate.total.tolist()) for o in outcomes.values()}
    contributions = sum(config.reduction.contribution(v) for v in datasets.values())
    assert totals == {tuple(contributions.tolist())}


@pytest.mark.parametrize("scheme", [AdditiveScheme(3), ShamirScheme(3, 2)])
def test_with_dp_the_count_is_noised_from_the_same_budget(scheme: Scheme) -> None:
    reduction = Reduction(ReduceOp.MEAN, SPEC, width=2, count_clipped=True)
    terms = dp.PrivacyTerms(epsilon=3.0)
    plan = dp.plan_noise(reduction, terms)
    assert [g.name for g in plan.groups] == ["sum", "count", "clipped"]
    clipped_group = plan.groups[-1]
    assert clipped_group.sensitivity == 2 and clipped_group.epsilon == pytest.approx(1.0)
    assert plan.spent(3).epsilon == pytest.approx(3.0, rel=1e-6)
    config = RoundConfig("job", reduction, scheme, 1, privacy=plan)
    rng = np.random.default_rng(5)
    datasets = {f"d{i}": rng.uniform(-6, 6, size=(100, 2)) for i in range(3)}
    expected = sum(outside(v) for v in datasets.values())
    outcomes = simulate_round(config, datasets, rng, noise=functools.partial(dp.sample_noise, plan))
    seen = set()
    for outcome in outcomes.values():
        assert isinstance(outcome, Result)
        seen.add(outcome.aggregate.clipped)
    (noisy,) = seen  # every node releases the same noisy count
    assert noisy is not None and noisy >= 0
    # Three nodes' Laplace noise of scale 2 (sensitivity 2 over epsilon 1): within 50 scales.
    assert abs(noisy - expected) <= 3 * 50 * clipped_group.scale
