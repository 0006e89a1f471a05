"""Fixed-point encoding: the one module where floats meet the integers that get shared.

A `FieldSpec` names one field of a map's output with explicit bounds and an explicit scale. A
value is clipped to `[lo, hi]`, multiplied by `scale` and rounded to the nearest int64; decoding
divides by `scale` (by `scale**2` for sums of squares). Clipping is not a convenience: the bounds
are what bound one record's influence on a sum, and so the sensitivity that differential privacy
calibrates its noise to.

Sums are taken in a ring or field of fixed size (Z_2^64 for additive sharing, the Mersenne field
of 2^61 - 1 for Shamir; `capacity` is the largest absolute value each can hold as a signed
integer). A sum that leaves that range would wrap and decode to garbage without any error, so
`check_headroom` refuses, before anything is shared, a proposal whose bounds, scale and number of
values could get there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compute.errors import EncodingError, EncodingOverflowError

MAX_VALUES = 10**6
"""Default and design target for how many encoded values one aggregate may sum."""

INT64_MAX = 2**63 - 1
_MAX_BOUND = 2**62
"""Largest encoded magnitude a single value may have, so that one value always fits an int64."""


@dataclass(frozen=True)
class FieldSpec:
    """One numeric field of a map's output: bounds for clipping and the fixed-point scale."""

    name: str
    """What the field is, for error messages (`"age"`, `"p_class_3"`)."""
    lo: float
    """Smallest value kept; smaller values are clipped up to it."""
    hi: float
    """Largest value kept; larger values are clipped down to it."""
    scale: int = 1 << 16
    """Fixed-point scale: a value `x` is encoded as `round(clip(x) * scale)`; 1 for counts."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.lo > self.hi:
            raise EncodingError(
                f"field {self.name!r}: bounds must be finite with lo <= hi, "
                f"got lo={self.lo!r}, hi={self.hi!r}"
            )
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 1:
            raise EncodingError(
                f"field {self.name!r}: scale must be a positive int, got {self.scale!r}"
            )
        if max(abs(self.lo), abs(self.hi)) * self.scale >= _MAX_BOUND:
            raise EncodingOverflowError(
                f"field {self.name!r}: bounds [{self.lo}, {self.hi}] at scale {self.scale} "
                f"encode to more than 2^62; lower the scale or tighten the bounds"
            )

    @property
    def bound(self) -> int:
        """The largest absolute value an encoded value of this field can take."""
        return max(abs(round(self.lo * self.scale)), abs(round(self.hi * self.scale)))

    def clip(self, values: ArrayLike) -> NDArray[np.float64]:
        """`values` as float64, clipped to `[lo, hi]`. Raises `EncodingError` on NaN."""
        array = np.asarray(values, dtype=np.float64)
        if np.isnan(array).any():
            raise EncodingError(
                f"field {self.name!r}: NaN cannot be clipped to [{self.lo}, {self.hi}]; "
                "drop or impute missing values in the map"
            )
        return np.clip(array, self.lo, self.hi)

    def encode(self, values: ArrayLike) -> NDArray[np.int64]:
        """Clip, scale and round `values` to int64 fixed point (any shape)."""
        encoded: NDArray[np.int64] = np.rint(self.clip(values) * self.scale).astype(np.int64)
        return encoded

    def decode(self, encoded: ArrayLike, power: int = 1) -> NDArray[np.float64]:
        """Undo `encode` for a sum of encoded values (`power=2` for a sum of squares)."""
        return np.asarray(encoded, dtype=np.int64).astype(np.float64) / float(self.scale**power)

    def histogram(self, values: ArrayLike, bins: int) -> NDArray[np.int64]:
        """Counts of the clipped `values` in `bins` equal-width bins over `[lo, hi]`."""
        if bins < 1 or self.lo >= self.hi:
            raise EncodingError(
                f"field {self.name!r}: a histogram needs bins >= 1 and lo < hi, "
                f"got bins={bins}, [{self.lo}, {self.hi}]"
            )
        counts, _ = np.histogram(self.clip(values).ravel(), bins=bins, range=(self.lo, self.hi))
        return counts.astype(np.int64)


def as_records(values: ArrayLike, width: int) -> NDArray[np.float64] | None:
    """A provider's records as an `(m, width)` float array, or `None` if they do not have
    that shape. 1-D input is m records when `width` is 1, otherwise one record."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(-1, 1) if width == 1 else array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != width:
        return None
    return array


def check_headroom(bound: int, n_values: int, capacity: int, what: str) -> None:
    """Refuse a sum of `n_values` terms of magnitude up to `bound` that could exceed `capacity`.

    `what` says which sum, for the message. The check is exact integer arithmetic.
    """
    if n_values < 0 or bound < 0:
        raise EncodingError(f"{what}: n_values and bound must be >= 0")
    if n_values * bound > capacity:
        fits = capacity // bound if bound else n_values
        raise EncodingOverflowError(
            f"{what}: {n_values} values of magnitude up to {bound} can sum to "
            f"{n_values * bound}, more than the {capacity} the ring holds exactly (it would "
            f"wrap silently); at most {fits} such values fit. Lower the scale, tighten the "
            "bounds or lower max_values"
        )


def max_values(bound: int, capacity: int) -> int:
    """How many values of magnitude up to `bound` can be summed within `capacity`."""
    return capacity // bound if bound else INT64_MAX


def encode_weights(weights: ArrayLike, scale: int, limit: float) -> NDArray[np.int64]:
    """Public weights (ensemble weights, say) as int64 fixed point with `scale`.

    Weights must be finite with magnitude at most `limit`, the bound the headroom check used.
    """
    array = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(array).all() or (np.abs(array) > limit).any():
        raise EncodingError(f"weights must be finite with magnitude at most {limit}")
    encoded: NDArray[np.int64] = np.rint(array * scale).astype(np.int64)
    return encoded


def weight_bound(limit: float, scale: int) -> int:
    """The largest absolute value an encoded weight can take."""
    return round(abs(limit) * scale)


def decode_ratio(sums: ArrayLike, count: int, scale: int) -> NDArray[np.float64]:
    """`sums / (count * scale)`: a mean, or a weighted sum when `count` is 1. NaN when
    `count <= 0` (possible only after noise)."""
    values = np.asarray(sums, dtype=np.int64).astype(np.float64)
    if count <= 0:
        return np.full(values.shape, np.nan)
    return values / (float(count) * scale)


def decode_variance(
    sums: ArrayLike, squares: ArrayLike, count: int, scale: int
) -> NDArray[np.float64]:
    """Population variance from a count, sums and sums of squares of encoded values.

    Clamped at 0 (noise can make it slightly negative); NaN when `count <= 0`.
    """
    mean = decode_ratio(sums, count, scale)
    mean_square = decode_ratio(squares, count, scale * scale)
    return np.maximum(mean_square - mean * mean, 0.0)


def as_float(values: ArrayLike) -> NDArray[np.float64]:
    """Integer aggregates (counts, histograms) as float64, for a uniform result type."""
    return np.asarray(values, dtype=np.int64).astype(np.float64)
