"""Provider slashes within their signed caps, and the money of a finalize."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.valuation.errors import (
    InconsistentInputError,
    InvalidAmountError,
    InvalidBasisPointsError,
    PayoutAboveBudgetError,
    SlashedToPayoutsTooHighError,
    ValuationError,
)
from market.valuation.payouts import MAX_FEE_BPS, Settlement, settlement, slash_amounts, slash_cap

DATASET_A = "0x" + "0a" * 32
DATASET_B = "0x" + "0b" * 32
DATASET_C = "0x" + "0c" * 32

bps = st.integers(0, 10_000)
stakes = st.integers(0, 2**128 - 1)
dataset_ids = st.binary(min_size=32, max_size=32).map(lambda raw: "0x" + raw.hex())


# -- slashes -------------------------------------------------------------------------------------


def test_slash_takes_the_smallest_of_severity_signed_cap_and_job_max() -> None:
    stakes_in = {DATASET_A: 10_000, DATASET_B: 10_000, DATASET_C: 999}
    caps = {DATASET_A: 500, DATASET_B: 5_000, DATASET_C: 10_000}
    severity = {DATASET_C: 10_000, DATASET_B: 9_000, DATASET_A: 9_000}
    # A: its own cap 5%; B: the job max 20%; C: 999 * 20% = 199.8 -> floor 199.
    assert slash_amounts(stakes_in, caps, 2_000, severity) == {
        DATASET_A: 500,
        DATASET_B: 2_000,
        DATASET_C: 199,
    }
    assert slash_cap(999, 10_000, 2_000) == 199


def test_slashes_come_sorted_and_without_zeros() -> None:
    stakes_in = {DATASET_A: 10_000, DATASET_B: 10_000, DATASET_C: 1}
    caps = dict.fromkeys(stakes_in, 10_000)
    severity = {DATASET_C: 5_000, DATASET_B: 100, DATASET_A: 0}
    slashes = slash_amounts(stakes_in, caps, 10_000, severity)
    assert list(slashes.items()) == [(DATASET_B, 100)]  # A: severity 0, C: 1 * 50% floors to 0
    assert slash_amounts(stakes_in, caps, 10_000, {}) == {}


@pytest.mark.parametrize(
    ("stakes_in", "caps", "job_max", "severity", "error"),
    [
        ({}, {DATASET_A: 1}, 100, {DATASET_A: 1}, InconsistentInputError),
        ({DATASET_A: 1}, {}, 100, {DATASET_A: 1}, InconsistentInputError),
        ({DATASET_A: 1}, {DATASET_A: 1}, 10_001, {DATASET_A: 1}, InvalidBasisPointsError),
        ({DATASET_A: 1}, {DATASET_A: 1}, 100, {DATASET_A: 10_001}, InvalidBasisPointsError),
        ({DATASET_A: 1}, {DATASET_A: 2**16}, 100, {DATASET_A: 1}, InvalidBasisPointsError),
        ({DATASET_A: 1}, {DATASET_A: -1}, 100, {DATASET_A: 1}, InvalidBasisPointsError),
        ({DATASET_A: -1}, {DATASET_A: 1}, 100, {DATASET_A: 1}, InvalidAmountError),
    ],
)
def test_slash_rejects_bad_input(
    stakes_in: Any, caps: Any, job_max: Any, severity: Any, error: type[ValuationError]
) -> None:
    with pytest.raises(error):
        slash_amounts(stakes_in, caps, job_max, severity)


def test_a_signed_cap_above_10000_bps_is_bounded_by_the_job_max() -> None:
    # The contract stores the signed cap as uint16 and takes the min with the job max (≤ 10_000).
    assert slash_amounts({DATASET_A: 100}, {DATASET_A: 65_535}, 10_000, {DATASET_A: 10_000}) == {
        DATASET_A: 100
    }


@given(st.dictionaries(dataset_ids, st.tuples(stakes, st.integers(0, 2**16 - 1), bps)), bps)
def test_a_slash_never_exceeds_the_contract_cap(
    providers: dict[str, tuple[int, int, int]], job_max: int
) -> None:
    stakes_in = {key: stake for key, (stake, _, _) in providers.items()}
    caps = {key: cap for key, (_, cap, _) in providers.items()}
    severity = {key: sev for key, (_, _, sev) in providers.items()}
    slashes = slash_amounts(stakes_in, caps, job_max, severity)
    assert list(slashes) == sorted(slashes)  # ascending datasetId, as finalize requires
    for key, (stake, cap, sev) in providers.items():
        amount = slashes.get(key, 0)
        assert amount <= slash_cap(stake, cap, job_max) <= stake
        assert amount == stake * min(sev, cap, job_max) // 10_000


# -- settlement ----------------------------------------------------------------------------------


def test_settlement_example() -> None:
    result = settlement(1_001, 250, 3, 500, 40, 10)
    assert result == Settlement(
        budget=1_001,
        fee=25,
        fee_per_member=(8, 8, 8),
        payout_total=500,
        refund=477,
        slashed_total=40,
        slashed_to_payouts=10,
        claimable=510,
        burned=30,
    )


def test_payouts_may_take_everything_left_after_the_fee() -> None:
    result = settlement(1_000, MAX_FEE_BPS, 1, 500, 0, 0)
    assert (result.fee, result.refund, result.fee_per_member) == (500, 0, (500,))


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((1_000, 5_001, 1, 0, 0, 0), InvalidBasisPointsError),
        ((1_000, 100, 0, 0, 0, 0), InconsistentInputError),
        ((1_000, 100, True, 0, 0, 0), InconsistentInputError),
        ((1_000, 100, 1, 991, 0, 0), PayoutAboveBudgetError),
        ((1_000, 100, 1, 0, 5, 6), SlashedToPayoutsTooHighError),
        ((-1, 100, 1, 0, 0, 0), InvalidAmountError),
        ((1_000, 100, 1, -1, 0, 0), InvalidAmountError),
    ],
)
def test_settlement_rejects_what_the_contract_reverts_on(
    args: tuple[Any, ...], error: type[ValuationError]
) -> None:
    with pytest.raises(error) as info:
        settlement(*args)
    assert isinstance(info.value, ValueError)


@st.composite
def settlements(draw: st.DrawFn) -> tuple[int, int, int, int, int, int]:
    budget = draw(st.integers(0, 2**128 - 1))
    fee_bps = draw(st.integers(0, MAX_FEE_BPS))
    n_accepted = draw(st.integers(1, 7))
    payout_total = draw(st.integers(0, budget - budget * fee_bps // 10_000))
    slashed_total = draw(st.integers(0, 2**128 - 1))
    slashed_to_payouts = draw(st.integers(0, slashed_total))
    return budget, fee_bps, n_accepted, payout_total, slashed_total, slashed_to_payouts


@given(settlements())
def test_settlement_conserves_money(args: tuple[int, int, int, int, int, int]) -> None:
    result = settlement(*args)
    assert sum(result.fee_per_member) + result.payout_total + result.refund == result.budget
    assert result.fee - args[2] < sum(result.fee_per_member) <= result.fee
    assert len(result.fee_per_member) == args[2] and len(set(result.fee_per_member)) == 1
    assert result.claimable + result.burned == result.payout_total + result.slashed_total
    assert min(result.refund, result.burned, result.claimable) >= 0


@given(settlements(), st.integers(0, 2**128 - 1), st.data())
def test_the_refund_never_depends_on_slashes(
    args: tuple[int, int, int, int, int, int], other_slashed: int, data: st.DataObject
) -> None:
    budget, fee_bps, n_accepted, payout_total, _, _ = args
    to_payouts = data.draw(st.integers(0, other_slashed))
    base = settlement(*args)
    other = settlement(budget, fee_bps, n_accepted, payout_total, other_slashed, to_payouts)
    assert other.refund == base.refund and other.fee == base.fee
