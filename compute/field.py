"""Vectorized arithmetic in the prime field GF(p), p = 2^61 - 1 (a Mersenne prime).

Why this prime: elements fit a uint64 with three bits to spare, so a sum of up to 8 elements never
overflows, multiplying by a small public constant (the evaluation points 1..8 of a committee)
never overflows, and reduction needs no division: since 2^61 = 1 (mod p),
`v mod p = (v & p) + (v >> 61)`, then one conditional subtraction. A general product of two
elements needs 122 bits; `mul` splits both into 32-bit halves and folds the partial products
back with the same identity, all in uint64 NumPy operations.

Signed integers are embedded as `v mod p` and lifted back to the representative in
`[-(p - 1) / 2, (p - 1) / 2]`, so the field holds sums with magnitude up to `CAPACITY = 2^60 - 1`.

Every function takes and returns uint64 arrays of reduced elements (in `[0, p)`) and broadcasts
as NumPy does. Scalars that are not arrays (Lagrange coefficients, weights) are Python ints.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compute.errors import EncodingOverflowError
from compute.randomness import Randomness, random_words

P = 2**61 - 1
"""The field modulus."""

CAPACITY = (P - 1) // 2
"""Largest magnitude of a signed integer that survives the round trip through the field."""

_P = np.uint64(P)
_61 = np.uint64(61)
_32 = np.uint64(32)
_29 = np.uint64(29)
_3 = np.uint64(3)
_LO32 = np.uint64(0xFFFFFFFF)
_LO29 = np.uint64((1 << 29) - 1)
SUM_ROWS = 8
"""How many reduced elements can be added in uint64 without overflow: 8 * (p - 1) < 2^64."""


def reduce(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Any uint64 array reduced into `[0, p)`, as a new array.

    Written in place in two temporaries (as `add` and `mul` are, in their fewest): large fresh
    temporaries cost more in first-touch page faults than the arithmetic. On 100,000 elements
    on this VM: 1.5 ms as one expression (four temporaries), 1.2 ms in two, and 0.1 ms for
    `fold` into a reused scratch array, which is why the hot paths (the heavy node's running
    sum, a provider's seeded sharing) pass their own buffers to `fold` and `normalize`."""
    if np.ndim(values) == 0:  # NumPy warns when a scalar (not an array) wraps; wrapping is meant
        folded = (values & _P) + (values >> _61)
        with np.errstate(over="ignore"):
            return np.minimum(folded, folded - _P)
    out = np.bitwise_and(values, _P)
    high = np.right_shift(values, _61)
    np.add(out, high, out=out)  # <= p + 7
    return normalize(out, high)  # out - p wraps above out when out < p


def normalize(
    values: NDArray[np.uint64], scratch: NDArray[np.uint64] | None = None
) -> NDArray[np.uint64]:
    """In place: elements in `[0, 2p)` brought into `[0, p)`; returns `values`. `scratch`, an
    array of the same shape, saves allocating a temporary."""
    shifted = np.subtract(values, _P, out=scratch)
    return np.minimum(values, shifted, out=values)


def fold(
    values: NDArray[np.uint64], scratch: NDArray[np.uint64] | None = None
) -> NDArray[np.uint64]:
    """In place: any uint64 array brought to at most `p + 7` without changing it mod p, in three
    passes and no allocation (`scratch`, of the same shape, saves even the temporary); returns
    `values`. The lazy reduction of a running sum: a folded value plus `SUM_ROWS - 1` reduced
    elements is at most `8p < 2^64`, so a running total needs folding only every 7 additions, and
    `reduce` once at the end."""
    high = np.right_shift(values, _61, out=scratch)  # <= 7
    np.bitwise_and(values, _P, out=values)  # <= p
    return np.add(values, high, out=values)


def from_signed(values: ArrayLike) -> NDArray[np.uint64]:
    """Signed int64 values as field elements; raises when one is beyond `CAPACITY`."""
    signed = np.asarray(values, dtype=np.int64)
    if signed.size and (signed.min() < -CAPACITY or signed.max() > CAPACITY):
        raise EncodingOverflowError(
            f"a value of magnitude above {CAPACITY} (2^60 - 1) does not fit the Shamir field "
            f"GF(2^61 - 1); lower the scale or tighten the bounds"
        )
    # Negative v as uint64 is 2^64 + v; adding p wraps it to p + v. Non-negative v gets 0.
    elements = np.right_shift(signed, 63).view(np.uint64)
    np.bitwise_and(elements, _P, out=elements)
    return np.add(elements, signed.view(np.uint64), out=elements)


def to_signed(elements: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Field elements lifted to the signed representatives in `[-CAPACITY, CAPACITY]`."""
    elements = np.asarray(elements, dtype=np.uint64)
    negative = elements > np.uint64(CAPACITY)
    return np.where(negative, elements - _P, elements).view(np.int64)


def add(a: NDArray[np.uint64], b: NDArray[np.uint64] | np.uint64) -> NDArray[np.uint64]:
    """`a + b mod p`."""
    total = np.add(a, b)
    if np.ndim(total) == 0:  # NumPy warns when a scalar (not an array) wraps; wrapping is meant
        with np.errstate(over="ignore"):
            return np.minimum(total, total - _P)
    return normalize(total)


def sub(a: NDArray[np.uint64], b: NDArray[np.uint64] | np.uint64) -> NDArray[np.uint64]:
    """`a - b mod p`."""
    return add(a, _P - b)


def mul_small(a: NDArray[np.uint64], c: int) -> NDArray[np.uint64]:
    """`a * c mod p` for a public constant `0 <= c <= 8` (no overflow: 8 * (p - 1) < 2^64)."""
    if not 0 <= c <= 8:
        raise ValueError(f"mul_small takes constants 0..8, got {c}; use mul")
    return reduce(a * np.uint64(c))


def mul(a: NDArray[np.uint64] | int, b: NDArray[np.uint64] | int) -> NDArray[np.uint64]:
    """`a * b mod p` for reduced elements (arrays or Python ints), broadcasting."""
    x = np.asarray(a % P if isinstance(a, int) else a, dtype=np.uint64)
    y = np.asarray(b % P if isinstance(b, int) else b, dtype=np.uint64)
    shape = np.broadcast_shapes(x.shape, y.shape)
    if x.shape != shape:
        x, y = y, x
    if x.shape != shape or not shape:  # scalars, or both operands broadcast: no in-place path
        x_hi, x_lo = x >> _32, x & _LO32  # x_hi < 2^29
        y_hi, y_lo = y >> _32, y & _LO32
        low = x_lo * y_lo  # < 2^64
        mid = x_hi * y_lo + x_lo * y_hi  # < 2^62
        high = x_hi * y_hi  # < 2^58; high * 2^64 = high * 8 (mod p)
        # mid * 2^32 = (mid >> 29) * 2^61 + (mid & (2^29 - 1)) * 2^32 = (mid >> 29) + (...)
        total = (high << _3) + (mid >> _29) + ((mid & _LO29) << _32) + reduce(low)  # < 2^63
        return reduce(total)
    # The same steps in place, in four arrays of the result's shape.
    y_hi, y_lo = y >> _32, y & _LO32
    x_lo = np.bitwise_and(x, _LO32)
    high = np.right_shift(x, _32)  # x_hi < 2^29
    low = np.multiply(x_lo, y_lo)  # < 2^64
    mid = np.multiply(high, y_lo)
    np.add(mid, np.multiply(x_lo, y_hi, out=x_lo), out=mid)  # < 2^62
    np.multiply(high, y_hi, out=high)  # < 2^58; high * 2^64 = high * 8 (mod p)
    np.left_shift(high, _3, out=high)
    np.add(high, np.right_shift(mid, _29, out=x_lo), out=high)
    np.add(high, np.left_shift(np.bitwise_and(mid, _LO29, out=mid), _32, out=mid), out=high)
    np.add(high, fold(low, mid), out=high)  # < 2^61 + 2^33 + 2^61 + p + 8 < 2^63
    return normalize(fold(high, low), low)  # fold leaves at most p + 7 < 2p


def sum_rows(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Sum over axis 0 mod p, without overflow.

    Up to 8 rows are added directly. More rows are split into 32-bit halves first: each half
    sums exactly in uint64 for up to 2^32 rows, and the high half is folded back times 2^32.
    """
    rows = values.shape[0]
    if rows <= SUM_ROWS:
        return reduce(values.sum(axis=0, dtype=np.uint64))
    if rows >= 1 << 32:
        raise ValueError("sum_rows adds at most 2^32 - 1 rows at once")
    low = (values & _LO32).sum(axis=0, dtype=np.uint64)
    high = (values >> _32).sum(axis=0, dtype=np.uint64)
    return add(reduce(low), mul(reduce(high), 1 << 32))


def dot(weights: Sequence[int], rows: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """`sum_i weights[i] * rows[i] mod p` for public integer weights (any sign)."""
    if len(weights) != rows.shape[0]:
        raise ValueError(f"{len(weights)} weights for {rows.shape[0]} rows")
    total = np.zeros(rows.shape[1:], dtype=np.uint64)
    for weight, row in zip(weights, rows, strict=True):
        total = add(total, mul(row, int(weight) % P))
    return total


def random_elements(
    rng: Randomness, shape: int | tuple[int, ...], out: NDArray[np.uint64] | None = None
) -> NDArray[np.uint64]:
    """Uniform elements of GF(p) (into `out` when given): 61 random bits, redrawing the one
    value (p) that is not an element, which happens with probability 2^-61 per element."""
    elements = random_words(rng, shape, out)
    elements >>= _3
    while elements.size and elements.max() == _P:
        bad = elements == _P
        elements[bad] = random_words(rng, int(bad.sum())) >> _3
    return elements


def inverse(a: int) -> int:
    """The multiplicative inverse of a nonzero element."""
    return pow(a % P, -1, P)


def lagrange_coefficients(points: Sequence[int], at: int) -> list[int]:
    """Coefficients `l_i` with `f(at) = sum_i l_i f(points[i])` for every polynomial `f` of degree
    below `len(points)`; `points` must be distinct elements."""
    coefficients = []
    for i, xi in enumerate(points):
        numerator, denominator = 1, 1
        for j, xj in enumerate(points):
            if i != j:
                numerator = numerator * (at - xj) % P
                denominator = denominator * (xi - xj) % P
        coefficients.append(numerator * inverse(denominator) % P)
    return coefficients
