"""The budget ledger's arithmetic: its composition figures are OpenDP's for the same
mechanisms (basic over pure and approximate DP, zCDP over discrete Gaussians), and its checks
stop at the total, per buyer, and count only the window."""

from __future__ import annotations

import opendp.combinators as dp_c
import opendp.domains as dp_domains
import opendp.measurements as dp_m
import opendp.metrics as dp_metrics
import opendp.mod as dp_mod
import pytest

from compute.budget import BudgetSpec, Limit, Spend, check, compose, job_cost, mock_spend
from compute.policy import PolicyError, parse_policy
from compute.proposal import parse_proposal
from market.demos.statistics import _proposal


def _plan(epsilon: float, delta: float):
    terms = _proposal(3, 2_000_000_000, 3)
    terms["privacy"]["dp"] = {"epsilon": epsilon, "delta": delta}
    return parse_proposal(terms).round_config("1").privacy


def _real(plan, zcdp: bool = False):
    """The job's own mechanisms, one per group, each at sensitivity 1 (its scale over its
    sensitivity: the same privacy), as OpenDP measurements."""
    dp_mod.enable_features("contrib")
    # One scalar each, under one metric, so that OpenDP composes them all together.
    domain, metric = dp_domains.atom_domain(T="i64"), dp_metrics.absolute_distance(T="f64")
    out = []
    for g in plan.groups:
        if plan.mechanism == "laplace":
            m = dp_m.make_laplace(domain, metric, g.scale / g.sensitivity)
            out.append(m if zcdp else dp_c.make_approximate(m))
        else:
            m = dp_m.make_gaussian(domain, metric, g.scale / g.sensitivity)
            out.append(m if zcdp else dp_c.make_fix_delta(dp_c.make_zCDP_to_approxDP(m), g.delta))
    return out


def _spends(plans):
    return [Spend(i + 1, "0xb", *job_cost(p), at=i) for i, p in enumerate(plans)]


def test_basic_composition_is_opendps_over_the_jobs_own_mechanisms():
    plans = [_plan(1.0, 0.0), _plan(0.5, 1e-7), _plan(0.25, 0.0), _plan(0.5, 1e-7)]
    ledger = compose(_spends(plans), "basic", Limit(epsilon=100, delta=1e-3))
    assert ledger.rule == "basic"
    real = dp_c.make_composition([m for p in plans for m in _real(p)]).map(1.0)
    assert ledger.epsilon == pytest.approx(real[0], rel=1e-9)
    assert ledger.delta == pytest.approx(real[1], rel=1e-9)


def test_zcdp_composition_is_opendps_and_tighter_for_many_gaussian_jobs():
    plans = [_plan(0.2, 1e-8)] * 30
    delta = 1e-6
    spends = _spends(plans)
    ledger = compose(spends, "zcdp", Limit(epsilon=100, delta=delta))
    assert ledger.rule == "zCDP"
    rho = dp_c.make_composition([m for p in plans for m in _real(p, zcdp=True)])
    real = dp_c.make_fix_delta(dp_c.make_zCDP_to_approxDP(rho), delta=delta).map(1.0)
    assert ledger.rho == pytest.approx(rho.map(1.0), rel=1e-9)
    assert ledger.epsilon == pytest.approx(real[0], rel=1e-9)
    assert ledger.epsilon < compose(spends, "basic", Limit(epsilon=100, delta=0.5)).epsilon
    # A few large pure-DP jobs: basic composition is tighter, and the ledger charges it.
    few = _spends([_plan(1.0, 0.0)] * 2)
    assert compose(few, "zcdp", Limit(epsilon=100, delta=delta)).rule == "basic"


def test_checks_stop_at_the_total_per_buyer_and_count_only_the_window():
    spec = BudgetSpec(epsilon=3, per_buyer={"epsilon": 2}, window_s=100)
    spends = [Spend(1, "0xA", 1.0, 0.0, at=0), Spend(2, "0xa", 1.0, 0.0, at=50)]
    mine = check(spec, spends, Spend(3, "0xa", 0.5, 0.0, at=60), now=60)
    assert not mine.fits and mine.reasons == (
        "epsilon 0.5, delta 0 exceeds buyer 0xa's privacy budget on this dataset under basic "
        "composition: epsilon 0, delta 0 left of epsilon 2, delta 0",
    )
    assert check(spec, spends, Spend(3, "0xb", 0.5, 0.0, at=60), now=60).fits
    assert not check(spec, spends, Spend(3, "0xb", 1.5, 0.0, at=60), now=60).fits
    # The first spend has left the window by t=101: alice may spend again.
    assert check(spec, spends, Spend(3, "0xa", 1.0, 0.0, at=101), now=101).fits

    # The dp mock data counts in every window.
    class Mock:
        mock_spend = (2.5, 0.0)

    ledger = [mock_spend(Mock()), *spends]
    assert not check(spec, ledger, Spend(3, "0xb", 0.6, 0.0, at=200), now=200).fits
    assert check(spec, ledger, Spend(3, "0xb", 0.5, 0.0, at=200), now=200).fits
    no_dp = check(spec, spends, None, now=60)
    assert not no_dp.fits and "epsilon is unbounded" in no_dp.reasons[0]


def test_a_budget_in_a_policy_file_is_validated():
    policy = parse_policy('{"budget": {"epsilon": 10, "delta": 1e-6, "composition": "zcdp"}}')
    assert policy.budget == BudgetSpec(epsilon=10, delta=1e-6, composition="zcdp")
    with pytest.raises(PolicyError, match="set a delta > 0"):
        parse_policy('{"budget": {"epsilon": 10, "composition": "zcdp"}}')
    with pytest.raises(PolicyError, match="budget.epsilon"):
        parse_policy('{"budget": {"epsilon": 0}}')


def test_a_policy_sets_other_totals_for_particular_datasets():
    one = "0x" + "ab" * 32
    policy = parse_policy(
        '{"budget": {"epsilon": 10}, "dataset_budgets": {"clinic-a": {"epsilon": 2}, '
        f'"{one.upper().replace("0X", "0x")}": {{"epsilon": 3}}}}}}'
    )
    assert policy.budget_for("0x" + "cd" * 32, "clinic-a") == BudgetSpec(epsilon=2)
    assert policy.budget_for(one, "other") == BudgetSpec(epsilon=3)  # by id, any case
    assert policy.budget_for("0x" + "cd" * 32, "other") == BudgetSpec(epsilon=10)
    assert parse_policy("{}").budget_for(one) is None  # no budget: unlimited
    with pytest.raises(PolicyError, match="dataset_budgets"):
        parse_policy('{"dataset_budgets": {"clinic-a": {"epsilon": -1}}}')
