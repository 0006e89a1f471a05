"""The pure slash/unbonding rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.chain import MarketConfig
from market.staking import rules
from market.valuation import payouts

bps = st.integers(0, 10_000)
stakes = st.integers(0, 2**128 - 1)


@given(stake=stakes, signed=st.integers(0, 2**16 - 1), job=bps)
def test_slash_cap_never_exceeds_stake_or_either_cap(stake, signed, job):
    cap = payouts.slash_cap(stake, signed, job)
    assert 0 <= cap <= stake
    assert cap * 10_000 <= stake * min(signed, job) < (cap + 1) * 10_000


@given(requested=st.integers(1, 2**40), posted=st.integers(0, 2**40))
def test_dataset_slashable_only_if_it_unbonded_after_posting(requested, posted):
    assert rules.dataset_slashable(requested, posted) == (requested > posted)
    assert rules.dataset_slashable(0, posted)


def test_unbonding():
    assert rules.unlock_at(100, 50) == 150
    assert not rules.can_withdraw(100, 50, 149) and rules.can_withdraw(100, 50, 150)
    assert not rules.can_withdraw(0, 50, 10**9)
    with pytest.raises(ValueError, match="request an unstake"):
        rules.unlock_at(0, 50)


def test_default_config_unbonds_after_every_slashing_window():
    cfg = MarketConfig()
    minimum = rules.minimum_unbonding_period(
        cfg.max_job_window, cfg.settlement_grace, cfg.report_window
    )
    assert cfg.unbonding_period >= minimum


@given(stake=stakes, slash=bps, reward=bps)
def test_equivocation_split_is_exact(stake, slash, reward):
    out = rules.equivocation_slash(stake, slash, reward)
    assert out.slashed == out.reward + out.burned and out.slashed <= stake


@given(stake=stakes, penalty=stakes)
def test_liveness_penalty_is_bounded_by_stake(stake, penalty):
    assert rules.liveness_penalty(stake, penalty) == min(stake, penalty)
