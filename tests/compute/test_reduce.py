"""Secure reduce operations against the same statistics computed in the clear."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import ArrayLike, NDArray

from compute.encoding import FieldSpec
from compute.errors import EncodingOverflowError, ReductionError
from compute.reduce import (
    Abort,
    AbortReason,
    Aggregate,
    PartialSum,
    ReduceOp,
    Reduction,
    secure_reduce,
)
from compute.sharing import AdditiveScheme, Scheme, ShamirScheme
from tests.compute.strategies import schemes, seeds

SPEC = FieldSpec("x", -5.0, 5.0, scale=2**12)
STEP = 1 / SPEC.scale

records = st.integers(min_value=1, max_value=6).flatmap(
    lambda m: st.lists(
        st.lists(st.floats(-8, 8, allow_nan=False), min_size=2, max_size=2),
        min_size=m,
        max_size=m,
    )
)
"""A provider's records: m rows of width 2, some outside the bounds."""


def run(
    reduction: Reduction,
    scheme: Scheme,
    datasets: Mapping[str, ArrayLike],
    seed: int,
    *,
    weights: Mapping[str, int] | None = None,
    min_participants: int = 1,
) -> Aggregate | Abort:
    rng = np.random.default_rng(seed)
    received: dict[int, dict[str, NDArray[np.uint64]]] = {h: {} for h in range(1, scheme.n + 1)}
    for dataset_id, values in datasets.items():
        shares = scheme.share(reduction.contribution(values), rng)
        for holder in received:
            received[holder][dataset_id] = shares[holder - 1]
    return secure_reduce(
        reduction, scheme, received, min_participants=min_participants, weights=weights
    )


def aggregate(outcome: Aggregate | Abort) -> Aggregate:
    assert isinstance(outcome, Aggregate), outcome
    return outcome


def clipped(datasets: Mapping[str, ArrayLike]) -> NDArray[np.float64]:
    return np.concatenate([np.clip(np.array(v, dtype=float), -5, 5) for v in datasets.values()])


@settings(max_examples=40)
@given(
    schemes,
    st.dictionaries(st.text("abc", min_size=1, max_size=3), records, min_size=1, max_size=6),
    seeds,
)
def test_every_operation_matches_the_clear_computation(
    scheme: Scheme, datasets: dict[str, list[list[float]]], seed: int
) -> None:
    x = clipped(datasets)
    n = len(x)
    tolerance = n * STEP
    expected = {
        ReduceOp.SUM: x.sum(axis=0),
        ReduceOp.COUNT: np.array([n]),
        ReduceOp.MEAN: x.mean(axis=0),
        ReduceOp.VARIANCE: x.var(axis=0),
    }
    for op, value in expected.items():
        outcome = run(Reduction(op, SPEC, width=2), scheme, datasets, seed)
        assert isinstance(outcome, Aggregate)
        assert outcome.participants == tuple(sorted(datasets))
        # variance: each square is off by at most |x| * step, plus the mean's error
        atol = tolerance if op is not ReduceOp.VARIANCE else 30 * STEP
        np.testing.assert_allclose(outcome.values, value, atol=atol)
    assert (
        aggregate(run(Reduction(ReduceOp.COUNT, SPEC, width=2), scheme, datasets, seed)).count == n
    )
    histogram = Reduction(ReduceOp.HISTOGRAM, SPEC, bins=5)
    column = {d: np.array(v)[:, 0] for d, v in datasets.items()}
    outcome = aggregate(run(histogram, scheme, column, seed))
    counts, _ = np.histogram(clipped(column), bins=5, range=(-5, 5))
    assert outcome.values.tolist() == counts.tolist()


@given(schemes, st.lists(st.floats(-1, 1, allow_nan=False), min_size=2, max_size=5), seeds)
def test_weighted_sum_with_public_weights(scheme: Scheme, weights: list[float], seed: int) -> None:
    reduction = Reduction(ReduceOp.WEIGHTED_SUM, SPEC, width=2, weight_scale=2**10)
    rng = np.random.default_rng(seed)
    datasets = {f"m{i}": rng.uniform(0, 1, size=(1, 2)) for i in range(len(weights))}
    encoded = reduction.encode_weights({f"m{i}": w for i, w in enumerate(weights)})
    outcome = aggregate(run(reduction, scheme, datasets, seed, weights=encoded))
    expected = sum(w * datasets[f"m{i}"][0] for i, w in enumerate(weights))
    np.testing.assert_allclose(outcome.values, expected, atol=len(weights) * (STEP + 2**-10))


def test_below_the_participant_minimum_nothing_is_reconstructed() -> None:
    reduction = Reduction(ReduceOp.SUM, SPEC)
    datasets = {"a": [1.0], "b": [2.0]}
    outcome = run(reduction, AdditiveScheme(3), datasets, 0, min_participants=3)
    assert isinstance(outcome, Abort)
    assert outcome.reason is AbortReason.TOO_FEW_PARTICIPANTS


def test_participants_are_the_datasets_every_holder_has_and_holders_may_drop_out() -> None:
    reduction = Reduction(ReduceOp.SUM, SPEC)
    scheme = ShamirScheme(3, 2)
    rng = np.random.default_rng(1)
    received: dict[int, dict[str, NDArray[np.uint64]]] = {1: {}, 2: {}, 3: {}}
    for dataset_id, value in {"a": 1.0, "b": 2.0, "c": 4.0}.items():
        shares = scheme.share(reduction.contribution([value]), rng)
        for holder in (1, 2, 3):
            if not (dataset_id == "c" and holder == 2):  # c never reached holder 2
                received[holder][dataset_id] = shares[holder - 1]
    outcome = aggregate(secure_reduce(reduction, scheme, received, min_participants=2))
    assert outcome.participants == ("a", "b") and outcome.values.tolist() == [3.0]
    del received[3]  # a heavy node dropped out: 2 of 3 still reconstruct
    after = aggregate(secure_reduce(reduction, scheme, received, min_participants=2))
    assert after.values.tolist() == [3.0]
    del received[2]
    final = secure_reduce(reduction, scheme, received, min_participants=2)
    assert isinstance(final, Abort) and final.reason is AbortReason.TOO_FEW_HEAVY_NODES


def test_a_tampered_holder_aborts_the_reduce_and_is_named() -> None:
    reduction = Reduction(ReduceOp.SUM, SPEC)
    scheme = ShamirScheme(4, 2)
    rng = np.random.default_rng(2)
    received: dict[int, dict[str, NDArray[np.uint64]]] = {h: {} for h in (1, 2, 3, 4)}
    for dataset_id in ("a", "b"):
        shares = scheme.share(reduction.contribution([1.0]), rng)
        for holder in received:
            received[holder][dataset_id] = shares[holder - 1]
    received[2]["a"] = received[2]["a"] + np.uint64(1)
    outcome = secure_reduce(reduction, scheme, received, min_participants=1)
    assert isinstance(outcome, Abort)
    assert outcome.reason is AbortReason.INCONSISTENT_SHARES and outcome.culprit == 2


@given(st.sampled_from([AdditiveScheme(3), ShamirScheme(3, 2)]), st.integers(0, 40), seeds)
def test_partial_sum_streams_to_the_same_partial(scheme: Scheme, providers: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shares = rng.integers(0, 2**61 - 1, size=(providers, 3), dtype=np.uint64)
    running = PartialSum(scheme, 3)
    start = 0
    for size in (1, 7, 1, 9, 3, 100):
        running.add(shares[start : start + size])
        start += size
    assert running.value.tolist() == scheme.sum(shares).tolist()
    with pytest.raises(ReductionError):
        running.add(np.zeros((1, 4), dtype=np.uint64))


def test_headroom_is_checked_before_anything_is_shared() -> None:
    wide = FieldSpec("income", 0, 1e7, scale=2**20)
    Reduction(ReduceOp.SUM, wide, max_values=10**5).check_capacity(AdditiveScheme().capacity)
    with pytest.raises(EncodingOverflowError, match="max_values"):
        Reduction(ReduceOp.SUM, wide).check_capacity(AdditiveScheme().capacity)
    big = FieldSpec("x", -1000, 1000, scale=2**12)
    Reduction(ReduceOp.SUM, big).check_capacity(ShamirScheme().capacity)
    with pytest.raises(EncodingOverflowError, match="squares"):
        Reduction(ReduceOp.VARIANCE, big).check_capacity(ShamirScheme().capacity)
    with pytest.raises(EncodingOverflowError, match="max_values 3"):
        Reduction(ReduceOp.SUM, SPEC, max_values=3).contribution([1, 2, 3, 4])


def test_malformed_reductions() -> None:
    with pytest.raises(ReductionError):
        Reduction(ReduceOp.HISTOGRAM, SPEC, width=2, bins=3)
    with pytest.raises(ReductionError):
        Reduction(ReduceOp.HISTOGRAM, SPEC)
    with pytest.raises(ValueError):
        Reduction("median", SPEC)  # type: ignore[arg-type]
    with pytest.raises(ReductionError, match="shape"):
        Reduction(ReduceOp.SUM, SPEC, width=3).contribution([[1.0, 2.0]])
    with pytest.raises(ReductionError):
        Reduction(ReduceOp.SUM, SPEC).finish(np.zeros(2, dtype=np.int64))
