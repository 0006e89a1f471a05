"""The committee's dot products (`compute.products`): totals equal the plaintext ones exactly
(as encoded integers) and within the stated precision (as floats), for every committee shape
that can multiply, with the members a shape can lose missing; a wrong product is detected or
named where the shape allows; a wrapping gradient is void and a bad query is rejected."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from compute import field
from compute.errors import (
    MissingSharesError,
    ReductionError,
    ShareInconsistencyError,
    UnexpectedEventError,
)
from compute.messages import CloseSubmissions, Result, RoundConfig
from compute.products import (
    G_BOUND,
    ProductError,
    ProductPlan,
    QueryRejected,
    check_share,
    check_totals,
    encode_gradient,
    encode_query,
    error_bound,
    gradient_bits,
    gradient_reduction,
    open_totals,
    plain_totals,
    product_partial,
    product_scheme,
    query_bits,
    share_query,
    total_bound,
    zero_masks,
)
from compute.randomness import AesCtrRandom
from compute.reduce import Abort, AbortReason
from compute.round import HeavyNodeRound
from compute.sharing import AdditiveScheme, ShamirScheme
from compute.simulation import Faults, simulate_valuation

K = 64


def _market(seed: int, providers: int = 6):
    rng = np.random.default_rng(seed)
    q = rng.normal(0.0, 0.3, K)
    gradients = rng.normal(0.0, 40.0, (providers, K)) + rng.normal(0.0, 5.0, K)
    return q, gradients


def _committee(q_int, g_int, n, t, seed, members=None):
    """Every member's products, as the round computes them: its query share, its shares of
    each provider's gradient, and every member's masks for it."""
    rng = AesCtrRandom.from_seed(seed)
    shared = share_query(q_int, n, t, rng)
    gradient_shares = np.stack([ShamirScheme(n, t).share(g, rng) for g in g_int], axis=1)
    count = len(g_int) + 1
    masks = [zero_masks(n, t, count, rng) for _ in range(n)]
    members = members or range(1, n + 1)
    return shared, {
        i: product_partial(shared.shares[i - 1], gradient_shares[i - 1], [m[i - 1] for m in masks])
        for i in members
    }


@pytest.mark.parametrize(("n", "t"), [(3, 2), (4, 2), (5, 2), (5, 3), (7, 3)])
def test_the_committee_totals_equal_the_plaintext_totals(n: int, t: int) -> None:
    q, gradients = _market(n * 10 + t)
    q_bits = query_bits(q)
    g_bits = gradient_bits(float(np.abs(gradients).max()) * 2)
    q_int = encode_query(q, q_bits)
    g_int = np.stack([encode_gradient(g, g_bits)[0] for g in gradients])
    _, products = _committee(q_int, g_int, n, t, seed=f"{n}-{t}")
    opened = open_totals(products, n, t, K, q_bits + g_bits)
    assert list(opened.totals) == plain_totals(q_int, g_int)  # exact, as integers
    assert opened.query_norm_squared == int(sum(int(v) ** 2 for v in q_int))
    for total, g in zip(opened.influence(), gradients, strict=True):
        bound = error_bound(float(np.abs(q).sum()), float(np.abs(g).sum()), K, q_bits, g_bits)
        assert abs(total - float(q @ g)) <= bound
        assert bound < 1e-3 * abs(float(q @ g)) + 1e-3  # the precision is useful


@pytest.mark.parametrize(("n", "t", "missing"), [(4, 2, 1), (5, 2, 2), (5, 3, 0), (7, 3, 2)])
def test_members_may_be_missing_down_to_2t_minus_1(n: int, t: int, missing: int) -> None:
    q, gradients = _market(7)
    q_int, g_int = encode_query(q, 10), np.stack([encode_gradient(g, 8)[0] for g in gradients])
    members = range(1 + missing, n + 1)
    _, products = _committee(q_int, g_int, n, t, seed="missing", members=members)
    assert list(open_totals(products, n, t, K, 18).totals) == plain_totals(q_int, g_int)
    fewer = dict(list(products.items())[1:])
    if len(fewer) < 2 * t - 1:
        with pytest.raises(MissingSharesError):
            open_totals(fewer, n, t, K, 18)


def test_a_committee_that_cannot_multiply_is_refused() -> None:
    with pytest.raises(ProductError, match="products need 2t-1 = 5 members"):
        product_scheme(4, 3)


def _tamper(products, holder):
    changed = dict(products)
    changed[holder] = field.add(products[holder], np.uint64(12345))
    return changed


def test_a_wrong_product_is_detected_with_one_member_to_spare() -> None:
    q, gradients = _market(3)
    q_int, g_int = encode_query(q, 10), np.stack([encode_gradient(g, 8)[0] for g in gradients])
    _, products = _committee(q_int, g_int, 4, 2, seed="detect")
    with pytest.raises(ShareInconsistencyError):
        open_totals(_tamper(products, 2), 4, 2, K, 18)


def test_a_wrong_product_is_named_with_two_members_to_spare() -> None:
    q, gradients = _market(4)
    q_int, g_int = encode_query(q, 10), np.stack([encode_gradient(g, 8)[0] for g in gradients])
    _, products = _committee(q_int, g_int, 5, 2, seed="name")
    with pytest.raises(ShareInconsistencyError) as caught:
        open_totals(_tamper(products, 3), 5, 2, K, 18)
    assert caught.value.holders == (3,)


def test_with_2_of_3_a_wrong_product_shifts_the_totals_undetected() -> None:
    """The documented limit: 2t-1 products and no spare, so nothing can be checked."""
    q, gradients = _market(5)
    q_int, g_int = encode_query(q, 10), np.stack([encode_gradient(g, 8)[0] for g in gradients])
    _, products = _committee(q_int, g_int, 3, 2, seed="limit")
    shifted = open_totals(_tamper(products, 1), 3, 2, K, 18).totals
    assert list(shifted) != plain_totals(q_int, g_int)


def test_the_opened_values_are_masked() -> None:
    """Two runs with the same secrets and different masks: every member's products differ,
    the totals do not (the products are uniform but at 0)."""
    q, gradients = _market(6)
    q_int, g_int = encode_query(q, 10), np.stack([encode_gradient(g, 8)[0] for g in gradients])
    _, first = _committee(q_int, g_int, 3, 2, seed="mask-a")
    _, second = _committee(q_int, g_int, 3, 2, seed="mask-b")
    assert all(not np.array_equal(first[i], second[i]) for i in first)
    assert open_totals(first, 3, 2, K, 18).totals == open_totals(second, 3, 2, K, 18).totals


def test_a_gradient_shared_outside_the_honest_range_is_void() -> None:
    """A provider that shares field elements far beyond G_BOUND (to make its total wrap into
    a large positive one) gets a void total: it does not know q, so it cannot land in range."""
    q, gradients = _market(8, providers=3)
    q_int = encode_query(q, query_bits(q))
    g_int = np.stack([encode_gradient(g, 8)[0] for g in gradients]).astype(object)
    rng = np.random.default_rng(0)
    g_int[1] = [int(v) for v in rng.integers(2**58, 2**59, K)]  # within the field, not honest
    n, t = 3, 2
    srng = AesCtrRandom.from_seed("wrap")
    shared = share_query(q_int, n, t, srng)
    rows = []
    for g in g_int:
        secret = np.array([int(v) for v in g], dtype=np.int64)
        rows.append(ShamirScheme(n, t).share(secret, srng))
    gradient_shares = np.stack(rows, axis=1)
    masks = [zero_masks(n, t, 4, srng) for _ in range(n)]
    products = {
        i: product_partial(shared.shares[i - 1], gradient_shares[i - 1], [m[i - 1] for m in masks])
        for i in range(1, n + 1)
    }
    totals = open_totals(products, n, t, K, 18).totals
    honest = plain_totals(q_int, np.stack([encode_gradient(g, 8)[0] for g in gradients]))
    assert totals[1] is None
    assert (totals[0], totals[2]) == (honest[0], honest[2])


def test_gradients_are_clipped_to_the_bound_and_counted() -> None:
    encoded, clipped = encode_gradient([1.0, -5000.0, 3.0], 12)
    assert clipped == 1 and int(encoded[1]) == -G_BOUND
    assert abs(int(encoded[0]) * int(encoded[0])) <= total_bound(3)


def test_a_query_beyond_its_norm_or_off_one_polynomial_is_rejected() -> None:
    q, gradients = _market(9, providers=2)
    q_int, g_int = (
        encode_query(q, query_bits(q)),
        np.stack([encode_gradient(g, 8)[0] for g in gradients]),
    )
    n, t = 3, 2
    shared, products = _committee(q_int, g_int, n, t, seed="ok")
    assert open_totals(products, n, t, K, 18).query_norm_squared > 0
    big = (q_int * 4).astype(np.int64)  # a buyer that shares beyond its terms
    _, products = _committee(big, g_int, n, t, seed="big")
    with pytest.raises(QueryRejected):
        open_totals(products, n, t, K, 18)


def test_each_member_checks_its_share_against_the_commitment() -> None:
    q_int = encode_query(np.arange(1.0, K + 1), 10)
    shared = share_query(q_int, 3, 2, AesCtrRandom.from_seed("commit"))
    commitments = shared.commitments()
    check_share(commitments, 2, shared.nonces[1], shared.shares[1], K)
    forged = field.add(shared.shares[1], np.uint64(1))
    with pytest.raises(ProductError, match="not the one the proposal commits to"):
        check_share(commitments, 2, shared.nonces[1], forged, K)
    with pytest.raises(ProductError, match="not the one"):  # another holder's share
        check_share(commitments, 2, shared.nonces[0], shared.shares[0], K)


# --- through the round ---------------------------------------------------------------------
def _round(n: int, t: int, faults: Faults | None = None, seed: int = 0):
    q, gradients = _market(seed, providers=5)
    q_bits, g_bits = query_bits(q), gradient_bits(float(np.abs(gradients).max()) * 2)
    named = {f"ds-{i}": g for i, g in enumerate(gradients)}
    outcomes, plan = simulate_valuation(
        q, named, ShamirScheme(n, t), AesCtrRandom.from_seed(f"round-{seed}"),
        q_bits=q_bits, g_bits=g_bits, faults=faults or Faults(),
    )  # fmt: skip
    q_int = encode_query(q, q_bits)
    expected = plain_totals(q_int, np.stack([encode_gradient(g, g_bits)[0] for g in gradients]))
    return outcomes, plan, expected, q_int


@pytest.mark.parametrize(("n", "t", "offline"), [(3, 2, set()), (4, 2, {2}), (5, 2, {1, 5})])
def test_the_round_opens_each_total_and_nothing_else(n: int, t: int, offline: set[int]) -> None:
    outcomes, plan, expected, q_int = _round(n, t, Faults(offline=frozenset(offline)))
    assert sorted(outcomes) == [i for i in range(1, n + 1) if i not in offline]
    for outcome in outcomes.values():
        assert isinstance(outcome, Result)
        opened = check_totals(outcome.aggregate.total, plan.k, plan.scale_bits)
        assert list(opened.totals) == expected
        assert opened.query_norm_squared == sum(int(v) ** 2 for v in q_int)
        assert outcome.aggregate.holders == tuple(i for i in range(1, n + 1) if i not in offline)


def test_a_member_sending_a_wrong_product_is_named_in_2_of_5() -> None:
    plus = lambda v: field.add(v, np.uint64(1))  # noqa: E731
    outcomes, *_ = _round(5, 2, Faults(tamper={4: plus}), seed=1)
    for index, outcome in outcomes.items():
        if index != 4:
            assert isinstance(outcome, Abort) and outcome.reason is AbortReason.INCONSISTENT_SHARES
            assert outcome.culprit == 4


def test_a_round_without_its_query_share_does_not_close() -> None:
    q_int = encode_query(np.ones(K), 10)
    config = RoundConfig(
        "v", gradient_reduction(K, 8), ShamirScheme(3, 2), 1, products=ProductPlan(K, 10, 8)
    )
    node = HeavyNodeRound(config, 1, AesCtrRandom.from_seed("p"))
    with pytest.raises(UnexpectedEventError, match="pending"):
        node.handle(CloseSubmissions("v"))
    share = share_query(q_int, 3, 2, AesCtrRandom.from_seed("q")).shares[0]
    node.resolve(replace(config, products=ProductPlan(K, 10, 8, share)))
    assert node.handle(CloseSubmissions("v"))  # agreements, with masks


def test_additive_sharing_cannot_multiply() -> None:
    with pytest.raises(ReductionError, match="additive sharing cannot multiply"):
        RoundConfig(
            "v", gradient_reduction(K, 8), AdditiveScheme(3), 1, products=ProductPlan(K, 10, 8)
        )
