"""Fixed-point encoding: clipping, rounding, decoding and the headroom check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from compute.encoding import (
    FieldSpec,
    check_headroom,
    decode_ratio,
    decode_variance,
    encode_weights,
    max_values,
)
from compute.errors import EncodingError, EncodingOverflowError
from compute.field import CAPACITY
from compute.sharing import RING_CAPACITY

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(
    st.lists(finite, min_size=1, max_size=50),
    st.floats(min_value=-100, max_value=0),
    st.floats(min_value=0, max_value=100),
    st.integers(min_value=1, max_value=2**20),
)
def test_encode_decode_is_clip_within_half_a_step(
    values: list[float], lo: float, hi: float, scale: int
) -> None:
    spec = FieldSpec("x", lo, hi, scale)
    decoded = spec.decode(spec.encode(values))
    clipped = np.clip(np.array(values), lo, hi)
    assert np.all(np.abs(decoded - clipped) <= 0.5 / scale + 1e-9 * (1 + np.abs(clipped)))
    assert np.all(np.abs(spec.encode(values)) <= spec.bound)


def test_values_outside_the_bounds_are_clipped_including_infinities() -> None:
    spec = FieldSpec("age", 0.0, 120.0, scale=10)
    assert spec.encode([-5, 200, math.inf, -math.inf, 42.04]).tolist() == [0, 1200, 1200, 0, 420]


def test_nan_is_refused() -> None:
    with pytest.raises(EncodingError, match="NaN"):
        FieldSpec("x", 0, 1).encode([0.5, math.nan])


@pytest.mark.parametrize(
    ("lo", "hi", "scale"),
    [(1.0, 0.0, 1), (0.0, math.inf, 1), (math.nan, 1.0, 1), (0.0, 1.0, 0), (0.0, 1.0, 1.5)],
)
def test_bad_specs_are_refused(lo: float, hi: float, scale: int) -> None:
    with pytest.raises(EncodingError):
        FieldSpec("x", lo, hi, scale)


def test_a_spec_whose_single_value_overflows_is_refused() -> None:
    with pytest.raises(EncodingOverflowError, match="2\\^62"):
        FieldSpec("x", -1e10, 1e10, scale=2**40)


def test_headroom_is_exact_at_the_boundary() -> None:
    check_headroom(bound=1000, n_values=RING_CAPACITY // 1000, capacity=RING_CAPACITY, what="s")
    with pytest.raises(EncodingOverflowError, match="wrap silently") as info:
        check_headroom(1000, RING_CAPACITY // 1000 + 1, RING_CAPACITY, "sum of x")
    assert isinstance(info.value, ValueError)
    assert "sum of x" in str(info.value)
    assert max_values(1000, RING_CAPACITY) == RING_CAPACITY // 1000


def test_a_million_values_fit_at_the_documented_scales() -> None:
    # At scale 2^20, 10^6 values fit with |x| <= 8.7e6 in Z_2^64 and |x| <= 1.09e6 in GF(p).
    check_headroom(FieldSpec("x", -8.7e6, 8.7e6, 2**20).bound, 10**6, RING_CAPACITY, "additive")
    check_headroom(FieldSpec("x", -1.09e6, 1.09e6, 2**20).bound, 10**6, CAPACITY, "shamir")
    with pytest.raises(EncodingOverflowError):
        check_headroom(FieldSpec("x", -8.8e6, 8.8e6, 2**20).bound, 10**6, RING_CAPACITY, "add")
    with pytest.raises(EncodingOverflowError):
        check_headroom(FieldSpec("x", -1.1e6, 1.1e6, 2**20).bound, 10**6, CAPACITY, "shamir")


def test_histogram_counts_clipped_values() -> None:
    spec = FieldSpec("x", 0.0, 4.0)
    assert spec.histogram([-1, 0.5, 1.5, 3.9, 4.0, 99], bins=4).tolist() == [2, 1, 0, 3]
    with pytest.raises(EncodingError):
        spec.histogram([1.0], bins=0)


def test_decoders() -> None:
    assert decode_ratio([30, 60], 3, 10).tolist() == [1.0, 2.0]
    assert np.isnan(decode_ratio([1], 0, 1)).all()
    # values 1, 2, 3 at scale 10: sums 60, squares 1400, count 3 -> variance 2/3
    assert decode_variance([60], [1400], 3, 10)[0] == pytest.approx(2 / 3)
    assert decode_variance([10], [0], 1, 1)[0] == 0.0  # clamped, never negative
    assert encode_weights([0.5, -0.25], 1024, 1.0).tolist() == [512, -256]
    with pytest.raises(EncodingError):
        encode_weights([2.0], 1024, 1.0)
