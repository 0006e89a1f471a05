"""Proportional and equal splits, and influence-based payouts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.valuation.errors import (
    DuplicateAccountError,
    EmptyPayoutsError,
    InvalidAmountError,
    InvalidWeightError,
    MalformedInputError,
    ValuationError,
)
from market.valuation.merkle import PayoutTree
from market.valuation.payouts import (
    SCORE_SCALE,
    equal_split,
    positive_influence_payouts,
    score_weight,
    split_by_weights,
)
from tests.valuation.strategies import UINT256_MAX, addresses

totals = st.one_of(st.integers(0, 10**6), st.integers(0, UINT256_MAX))
weights = st.dictionaries(addresses, st.integers(0, 2**64), min_size=1, max_size=30)
scores = st.dictionaries(
    addresses,
    st.one_of(st.integers(-(10**12), 10**12), st.floats(-1e6, 1e6, allow_nan=False)),
    max_size=30,
)


def _shuffled(mapping: dict[str, Any], rng: Any) -> dict[str, Any]:
    items = list(mapping.items())
    rng.shuffle(items)
    return dict(items)


# -- examples ------------------------------------------------------------------------------------


def test_largest_remainder_gets_the_leftover_unit() -> None:
    # 7 * 1/3 = 2 r 1, 7 * 2/3 = 4 r 2: the one leftover unit goes to b (larger remainder).
    assert split_by_weights(7, {"a": 1, "b": 2}) == {"a": 2, "b": 5}


def test_ties_go_to_the_lowercased_account_first() -> None:
    assert split_by_weights(10, {"0xC": 1, "0xb": 1, "0xA": 1}) == {"0xA": 4, "0xb": 3, "0xC": 3}
    assert list(split_by_weights(10, {"0xC": 1, "0xb": 1, "0xA": 1})) == ["0xA", "0xb", "0xC"]


def test_zero_weights_and_zero_parts_are_omitted() -> None:
    assert split_by_weights(100, {"a": 0, "b": 1}) == {"b": 100}
    assert split_by_weights(1, {"a": 1, "b": 1}) == {"a": 1}
    assert split_by_weights(0, {"a": 1}) == {}
    assert split_by_weights(0, {}) == {}


def test_equal_split_gives_the_remainder_to_the_first_accounts() -> None:
    assert equal_split(11, ["c", "a", "b"]) == {"a": 4, "b": 4, "c": 3}
    with pytest.raises(DuplicateAccountError):
        equal_split(11, ["a", "A"])
    with pytest.raises(EmptyPayoutsError):
        equal_split(11, [])


@pytest.mark.parametrize(
    ("total", "weights_in", "error"),
    [
        (10, {"a": -1}, InvalidWeightError),
        (10, {"a": 1.5}, InvalidWeightError),
        (10, {"a": True}, InvalidWeightError),
        (10, {"a": 0}, EmptyPayoutsError),
        (10, {}, EmptyPayoutsError),
        (-1, {"a": 1}, InvalidAmountError),
        (2**256, {"a": 1}, InvalidAmountError),
        (1.0, {"a": 1}, InvalidAmountError),
        (10, {"0xab": 1, "0xAB": 1}, DuplicateAccountError),
        (10, {1: 1}, MalformedInputError),
    ],
)
def test_split_rejects_bad_input(total: Any, weights_in: Any, error: type[ValuationError]) -> None:
    with pytest.raises(error):
        split_by_weights(total, weights_in)


def test_score_weight_is_fixed_point_with_half_even_rounding() -> None:
    assert score_weight(3) == 3 * SCORE_SCALE
    assert score_weight(0.25) == 250_000_000
    assert score_weight(-0.5) == -500_000_000
    # 1/1024 and 3/1024 are exact binary floats; times 10^9 they end in exactly .5.
    assert score_weight(1 / 1024) == 976_562  # 976_562.5 -> even
    assert score_weight(3 / 1024) == 2_929_688  # 2_929_687.5 -> even
    assert score_weight(1e-10) == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "1", None, True])
def test_score_weight_rejects_non_finite_and_non_numbers(bad: Any) -> None:
    with pytest.raises(InvalidWeightError):
        score_weight(bad)


def test_only_positive_influence_is_paid() -> None:
    payouts = positive_influence_payouts(1000, {"a": 0.75, "b": 0.25, "c": -2.0, "d": 0})
    assert payouts == {"a": 750, "b": 250}
    assert positive_influence_payouts(1000, {"a": 3, "b": 1}) == {"a": 750, "b": 250}


def test_no_positive_influence_pays_nothing() -> None:
    assert positive_influence_payouts(1000, {"a": -1.0, "b": 0, "c": 1e-12}) == {}
    assert positive_influence_payouts(1000, {}) == {}


# -- properties ----------------------------------------------------------------------------------


@given(totals, weights)
def test_split_sums_exactly_and_is_within_one_unit_of_proportional(
    total: int, weights_in: dict[str, int]
) -> None:
    weight_sum = sum(weights_in.values())
    if total > 0 and weight_sum == 0:
        with pytest.raises(EmptyPayoutsError):
            split_by_weights(total, weights_in)
        return
    parts = split_by_weights(total, weights_in)
    assert sum(parts.values()) == total
    assert all(part > 0 for part in parts.values())
    for account, weight in weights_in.items():
        floor = total * weight // weight_sum if weight_sum else 0
        assert floor <= parts.get(account, 0) <= floor + 1
        if weight == 0:
            assert account not in parts


@given(totals, weights, st.randoms(use_true_random=False))
def test_split_does_not_depend_on_input_order(
    total: int, weights_in: dict[str, int], rng: Any
) -> None:
    if total > 0 and not any(weights_in.values()):
        return
    parts = split_by_weights(total, weights_in)
    shuffled = split_by_weights(total, _shuffled(weights_in, rng))
    assert list(shuffled.items()) == list(parts.items())


@given(totals, st.lists(addresses, min_size=1, max_size=30, unique=True))
def test_equal_split_parts_differ_by_at_most_one(total: int, accounts: list[str]) -> None:
    parts = equal_split(total, accounts)
    assert sum(parts.values()) == total
    full = [parts.get(account, 0) for account in accounts]
    assert max(full) - min(full) <= 1


@given(totals, scores, st.randoms(use_true_random=False))
def test_influence_payouts_pay_positive_scores_only_and_exactly(
    total: int, scores_in: dict[str, int | float], rng: Any
) -> None:
    payouts = positive_influence_payouts(total, scores_in)
    assert all(score_weight(scores_in[account]) > 0 for account in payouts)
    has_positive = any(score_weight(score) > 0 for score in scores_in.values())
    assert sum(payouts.values()) == (total if has_positive else 0)
    assert positive_influence_payouts(total, _shuffled(scores_in, rng)) == payouts
    if payouts:
        assert PayoutTree.build(payouts).total == total
