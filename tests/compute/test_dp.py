"""Differential privacy: OpenDP calibration and accounting, and distributed noise in the round."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from compute import dp
from compute.encoding import FieldSpec
from compute.errors import (
    EncodingOverflowError,
    MalformedMessageError,
    PrivacyError,
    ReductionError,
)
from compute.messages import Agreement, CloseSubmissions, NoiseSampler, Result, RoundConfig
from compute.reduce import ReduceOp, Reduction
from compute.round import HeavyNodeRound
from compute.sharing import AdditiveScheme, Scheme, ShamirScheme
from compute.simulation import Faults, simulate_round

SPEC = FieldSpec("x", 0.0, 1.0, scale=2**8)


def test_laplace_budget_is_split_over_groups_and_spent_as_asked() -> None:
    mean = Reduction(ReduceOp.MEAN, SPEC, width=4)
    plan = dp.plan_noise(mean, dp.PrivacyTerms(epsilon=1.0))
    assert [g.name for g in plan.groups] == ["sum", "count"]
    assert [g.sensitivity for g in plan.groups] == [4 * 256, 1]
    for group in plan.groups:
        assert group.epsilon == pytest.approx(0.5, rel=1e-6) and group.epsilon <= 0.5
        assert group.scale == pytest.approx(group.sensitivity / 0.5, rel=1e-6)
    spent = plan.spent(noise_shares=3)
    assert spent.mechanism == "laplace" and spent.delta == 0.0
    assert spent.epsilon == pytest.approx(1.0, rel=1e-6) and spent.epsilon <= 1.0 + 1e-12
    assert spent.noise_shares == 3


def test_gaussian_reports_epsilon_and_delta() -> None:
    variance = Reduction(ReduceOp.VARIANCE, SPEC, width=2)
    plan = dp.plan_noise(variance, dp.PrivacyTerms(epsilon=2.0, delta=1e-6))
    assert [g.name for g in plan.groups] == ["sum", "squares", "count"]
    assert [g.sensitivity for g in plan.groups] == pytest.approx(
        [2**0.5 * 256, 2**0.5 * 256**2, 1.0]
    )
    spent = plan.spent(2)
    assert spent.mechanism == "gaussian"
    assert spent.epsilon <= 2.0 + 1e-9 and spent.epsilon == pytest.approx(2.0, rel=1e-3)
    assert spent.delta == pytest.approx(1e-6)


def test_histogram_sensitivity_is_one_bin() -> None:
    histogram = Reduction(ReduceOp.HISTOGRAM, SPEC, bins=10)
    plan = dp.plan_noise(histogram, dp.PrivacyTerms(epsilon=0.5))
    assert plan.groups[0].sensitivity == 1 and plan.groups[0].scale == pytest.approx(2.0)


def test_sampled_noise_has_the_calibrated_spread() -> None:
    wide = Reduction(ReduceOp.SUM, FieldSpec("x", 0, 1, scale=1), width=4000)
    plan = dp.plan_noise(wide, dp.PrivacyTerms(epsilon=400.0))  # scale b = 4000 / 400 = 10
    noise = dp.sample_noise(plan)
    assert noise.dtype == np.int64 and noise.shape == (4000,)
    # Laplace(b) has standard deviation b * sqrt(2); 4000 draws pin it within a few percent.
    assert noise.std() == pytest.approx(10 * 2**0.5, rel=0.15)
    assert abs(noise.mean()) < 1.5


@pytest.mark.parametrize(
    ("epsilon", "delta"), [(0.0, 0.0), (-1.0, 0.0), (float("inf"), 0.0), (1.0, 1.0)]
)
def test_bad_privacy_terms(epsilon: float, delta: float) -> None:
    with pytest.raises(PrivacyError):
        dp.PrivacyTerms(epsilon, delta)


def _constant_noise(length: int, node: int) -> NoiseSampler:
    return lambda: np.full(length, 1000 * node, dtype=np.int64)


@pytest.mark.parametrize(
    ("scheme", "offline"),
    [(AdditiveScheme(3), ()), (ShamirScheme(3, 2), ()), (ShamirScheme(3, 2), (2,))],
)
def test_every_available_node_adds_its_noise_through_shares(
    scheme: Scheme, offline: tuple[int, ...]
) -> None:
    reduction = Reduction(ReduceOp.SUM, SPEC, width=2)
    plan = dp.plan_noise(reduction, dp.PrivacyTerms(epsilon=1.0))
    cfg = RoundConfig("job", reduction, scheme, 1, privacy=plan)
    data = {f"d{i}": np.full((3, 2), 0.5) for i in range(4)}
    noise = {n: _constant_noise(2, n) for n in cfg.committee}
    outcomes = simulate_round(
        cfg, data, np.random.default_rng(0), faults=Faults(frozenset(offline)), noise=noise
    )
    live = [n for n in cfg.committee if n not in offline]
    exact = 4 * 3 * 128  # encoded: 12 values of 0.5 at scale 256
    for node, outcome in outcomes.items():
        assert isinstance(outcome, Result)
        total = outcome.aggregate.total.tolist()
        assert total == [exact + sum(1000 * n for n in live)] * 2
        # What this node could subtract, its own noise, still leaves the others' in the result.
        assert total[0] - 1000 * node != exact
        assert outcome.privacy == plan.spent(len(live))


def test_with_opendp_noise_every_node_sees_the_same_noisy_result() -> None:
    reduction = Reduction(ReduceOp.MEAN, SPEC, width=3)
    plan = dp.plan_noise(reduction, dp.PrivacyTerms(epsilon=5.0))
    cfg = RoundConfig("job", reduction, ShamirScheme(3, 2), 2, privacy=plan)
    data = {f"d{i}": np.random.default_rng(i).uniform(0, 1, size=(200, 3)) for i in range(5)}
    outcomes = simulate_round(
        cfg, data, np.random.default_rng(1), noise=functools.partial(dp.sample_noise, plan)
    )
    done = [o for o in outcomes.values() if isinstance(o, Result)]
    assert len(done) == 3
    totals = {tuple(o.aggregate.total.tolist()) for o in done}
    assert len(totals) == 1
    result = outcomes[1]
    assert isinstance(result, Result)
    exact = np.concatenate([v for v in data.values()]).mean(axis=0)
    assert np.abs(result.values - exact).max() < 0.1  # noise of a few counts over 1,000 records
    assert result.privacy is not None and result.privacy.epsilon == pytest.approx(5.0, rel=1e-6)


def test_noise_needs_headroom_and_a_matching_plan() -> None:
    reduction = Reduction(ReduceOp.SUM, FieldSpec("x", 0, 1e6, scale=2**20), max_values=10**6)
    tiny = dp.plan_noise(reduction, dp.PrivacyTerms(epsilon=1e-3))
    with pytest.raises(EncodingOverflowError):
        RoundConfig("job", reduction, ShamirScheme(3, 2), 1, privacy=tiny)
    other = dp.plan_noise(Reduction(ReduceOp.MEAN, SPEC), dp.PrivacyTerms(1.0))
    with pytest.raises(ReductionError, match="another reduction"):
        RoundConfig("job", Reduction(ReduceOp.SUM, SPEC), AdditiveScheme(3), 1, privacy=other)


def test_agreements_must_carry_noise_shares_exactly_when_dp_is_on() -> None:
    reduction = Reduction(ReduceOp.SUM, SPEC)
    plan = dp.plan_noise(reduction, dp.PrivacyTerms(1.0))
    cfg = RoundConfig("job", reduction, AdditiveScheme(3), 1, privacy=plan)
    with pytest.raises(ReductionError, match="noise sampler"):
        HeavyNodeRound(cfg, 1, np.random.default_rng(0))
    node = HeavyNodeRound(cfg, 1, np.random.default_rng(0), _constant_noise(1, 1))
    out = node.handle(CloseSubmissions("job"))
    assert all(
        isinstance(m, Agreement) and m.noise_share is not None and m.noise_share.shape == (1,)
        for m in out
    )
    with pytest.raises(MalformedMessageError, match="noise share"):
        node.handle(Agreement("job", 2, 1, frozenset()))
