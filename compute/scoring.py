"""Scoring each participant under sharing: a linear statistic per participant with public
weights (the forecast kind's correlation with the outcomes), pure.

Each participant shares one vector `x` (for a forecast, its `T` standardized predictions in
fixed point); the committee knows public integer weights `w` (the standardized outcomes in
fixed point). Each heavy node computes, for every participant, `<share(x), w>` from its own
shares alone (`score_partial`: Shamir and additive shares are linear, so this is a share of
`<x, w>`), the members exchange these partials, one value per participant, and each
participant's score alone is reconstructed (`compute.round`'s SCORING phase). The sum of the
participants' vectors is never computed, and no one's `x` is.

Fixed point: `x` at scale `ScorePlan.value_scale` (within the reduction's field bounds) and
`w` at `WEIGHT_SCALE`, so a score `<x, w> / (T * value_scale * WEIGHT_SCALE)`; the products
fit the ring or field when `sum_t |w_t| * bound(x)` does (`ScorePlan.check_capacity`, exact).

`standardize` and `encode_outcomes` use `math.fsum` and `math.sqrt` (correctly rounded), so
every member derives the same integer weights from the same outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compute.errors import ComputeError, EncodingOverflowError
from compute.sharing import Scheme

WEIGHT_SCALE = 2**16
"""Fixed-point scale of the public weights (the standardized outcomes)."""


class ScoringError(ComputeError, ValueError):
    """Outcomes or scores that do not fit the job (their number, a NaN)."""


def standardize(values: ArrayLike) -> NDArray[np.float64]:
    """`values` less their mean, over their population standard deviation (all zeros when
    they are constant), computed with correctly rounded sums so every node gets the same."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ScoringError("values to standardize must be finite, at least one")
    items = [float(v) for v in array]
    mean = math.fsum(items) / len(items)
    centred = [v - mean for v in items]
    sd = math.sqrt(math.fsum(c * c for c in centred) / len(items))
    if sd == 0.0:
        return np.zeros(len(items))
    return np.array([c / sd for c in centred])


def encode_outcomes(outcomes: Sequence[float]) -> NDArray[np.int64]:
    """The public weights: the outcomes standardized, at `WEIGHT_SCALE` (half to even)."""
    return np.array([round(z * WEIGHT_SCALE) for z in standardize(outcomes)], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class ScorePlan:
    """What the committee scores each participant against: the public integer weights (one
    per coordinate of a contribution) and the scale of the shared values. The weights may be
    pending (`None`: a forecast's outcomes do not exist yet); the providers share and the
    committee collects with a pending plan, and the round closes only once they are known
    (`compute.round.HeavyNodeRound.resolve`)."""

    length: int
    value_scale: int
    weights: NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        if self.length < 1 or self.value_scale < 1:
            raise ScoringError("a score plan needs a length and a value scale >= 1")
        if self.weights is not None:
            weights = np.asarray(self.weights, dtype=np.int64).ravel()
            if weights.size != self.length:
                raise ScoringError(f"{weights.size} weights for {self.length} values")
            object.__setattr__(self, "weights", weights)

    @property
    def pending(self) -> bool:
        return self.weights is None

    @property
    def known(self) -> NDArray[np.int64]:
        if self.weights is None:
            raise ScoringError("the score weights are not known yet (the outcomes are pending)")
        return self.weights

    @property
    def denominator(self) -> int:
        """A score's integer total over this is the mean product (a correlation)."""
        return self.length * self.value_scale * WEIGHT_SCALE

    def check_capacity(self, bound: int, capacity: int) -> None:
        """Refuse weights whose products with values of magnitude up to `bound` could leave
        the ring or field (exact)."""
        if self.weights is None:
            return
        reach = int(np.abs(self.weights).astype(object).sum()) * bound
        if reach > capacity:
            raise EncodingOverflowError(
                f"scores of {self.length} values up to {bound} against these weights can reach "
                f"{reach}, more than the {capacity} the scheme holds; lower the values' scale"
            )

    def scores(self, totals: ArrayLike) -> NDArray[np.float64]:
        """Reconstructed integer totals (one per participant) as decoded scores."""
        return np.asarray(totals, dtype=np.int64).astype(np.float64) / float(self.denominator)

    def score(self, total: int) -> Fraction:
        """One reconstructed total as an exact fraction (what settlement uses)."""
        return Fraction(int(total), self.denominator)

    def plain_totals(self, encoded: ArrayLike) -> NDArray[np.int64]:
        """The totals in the clear from encoded values, one row per participant (the
        reference the secure scores must equal exactly)."""
        rows = np.asarray(encoded, dtype=np.int64).astype(object)
        return np.array(
            [int(v) for v in rows.reshape(-1, self.length) @ self.known.astype(object)],
            dtype=np.int64,
        )


def score_partial(
    scheme: Scheme, rows: NDArray[np.uint64], weights: NDArray[np.int64]
) -> NDArray[np.uint64]:
    """One node's shares of each participant's score: `rows` holds its shares of the
    participants' vectors (one row each, participants' order)."""
    return scheme.weighted_sum(np.ascontiguousarray(rows.T), [int(w) for w in weights])
