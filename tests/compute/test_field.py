"""GF(2^61 - 1) arithmetic against Python's arbitrary-precision integers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from compute import field
from compute.errors import EncodingOverflowError

P = field.P
elements = st.integers(min_value=0, max_value=P - 1)
element_lists = st.lists(elements, min_size=1, max_size=40)


def arr(values: list[int]) -> NDArray[np.uint64]:
    return np.array(values, dtype=np.uint64)


@given(element_lists, element_lists)
def test_mul_add_sub_match_python(a: list[int], b: list[int]) -> None:
    size = min(len(a), len(b))
    a, b = a[:size], b[:size]
    assert field.mul(arr(a), arr(b)).tolist() == [x * y % P for x, y in zip(a, b, strict=True)]
    assert field.add(arr(a), arr(b)).tolist() == [(x + y) % P for x, y in zip(a, b, strict=True)]
    assert field.sub(arr(a), arr(b)).tolist() == [(x - y) % P for x, y in zip(a, b, strict=True)]


def test_mul_extremes() -> None:
    edge = [0, 1, 2, P - 1, P - 2, 2**32, 2**32 - 1, 2**60, 2**61 - 2]
    for x in edge:
        assert field.mul(arr(edge), x).tolist() == [x * y % P for y in edge]


@given(element_lists, st.integers(min_value=0, max_value=8))
def test_mul_small_and_reduce(a: list[int], c: int) -> None:
    assert field.mul_small(arr(a), c).tolist() == [x * c % P for x in a]
    assert field.reduce(np.array([2**64 - 1, P, 2 * P, P + 7], dtype=np.uint64)).tolist() == [
        (2**64 - 1) % P,
        0,
        (2 * P) % P,
        7,
    ]


@given(st.lists(st.integers(min_value=-field.CAPACITY, max_value=field.CAPACITY), min_size=1))
def test_signed_round_trip(values: list[float]) -> None:
    elements_ = field.from_signed(np.array(values, dtype=np.int64))
    assert elements_.tolist() == [v % P for v in values]
    assert field.to_signed(elements_).tolist() == values


def test_from_signed_refuses_values_beyond_capacity() -> None:
    with pytest.raises(EncodingOverflowError, match="2\\^60"):
        field.from_signed(np.array([field.CAPACITY + 1], dtype=np.int64))
    with pytest.raises(EncodingOverflowError):
        field.from_signed(np.array([-(2**63)], dtype=np.int64))


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=1, max_value=3))
def test_sum_rows_matches_python_for_any_row_count(rows: int, width: int) -> None:
    rng = np.random.default_rng(rows * 7 + width)
    values = field.random_elements(rng, (rows, width))
    expected = [sum(int(v) for v in values[:, j]) % P for j in range(width)]
    assert field.sum_rows(values).tolist() == expected
    maxed = np.full((rows, width), P - 1, dtype=np.uint64)
    assert field.sum_rows(maxed).tolist() == [rows * (P - 1) % P] * width


def test_dot_with_signed_weights() -> None:
    rows = field.random_elements(np.random.default_rng(1), (4, 6))
    weights = [3, -2, 0, 2**40]
    expected = [
        sum(w * int(rows[i, j]) for i, w in enumerate(weights)) % P for j in range(rows.shape[1])
    ]
    assert field.dot(weights, rows).tolist() == expected


def test_random_elements_are_in_the_field_and_redraw_p() -> None:
    class AlwaysP:
        """A source whose first draw is the one 61-bit value that is not an element."""

        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, n: int) -> bytes:
            self.calls += 1
            word = (P << 3) if self.calls == 1 else (5 << 3)
            return word.to_bytes(8, "little") * (n // 8)

    source = AlwaysP()
    assert field.random_elements(source, 3).tolist() == [5, 5, 5]
    assert source.calls == 2
    sample = field.random_elements(np.random.default_rng(0), 10_000)
    assert sample.max() < P
    assert sample.max() > P // 2  # uses the whole range


def test_lagrange_interpolates() -> None:
    # f(x) = 5 + 3x + 2x^2 at points 1, 2, 4
    f = {x: (5 + 3 * x + 2 * x * x) % P for x in (1, 2, 4)}
    for at, expected in ((0, 5), (3, 5 + 9 + 18)):
        coefficients = field.lagrange_coefficients([1, 2, 4], at)
        assert sum(c * f[x] for c, x in zip(coefficients, (1, 2, 4), strict=True)) % P == expected
