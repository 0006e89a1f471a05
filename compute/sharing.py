"""Secret sharing of whole integer vectors: additive over Z_2^64 and Shamir over GF(2^61 - 1).

Both schemes share a signed int64 array of any shape into `n` shares, one per holder, stacked as
an array of shape `(n, *shape)`; holder `i` (numbered 1..n, as heavy nodes are) gets row
`i - 1`. Both are linear: holders can add shares of different secrets, or weight them with public
integers, and the result is a share of the same combination of the secrets. That is all a secure
reduce needs. Reconstruction takes a mapping from holder index to share.

- `AdditiveScheme(n)`: n-of-n. `n - 1` shares are uniform words and the last is the secret minus
  their sum, mod 2^64 (NumPy's uint64 arithmetic wraps, which is exactly that). Any `n - 1`
  shares are uniform and independent of the secret. Every share is needed to reconstruct, and a
  wrong share cannot be detected. With n = 3 this is the semi-honest 3-party scheme.
- `ShamirScheme(n, t)`: t-of-n. Holder `i` gets `f(i)` for a random polynomial `f` of degree
  `t - 1` with `f(0)` the secret. Any `t - 1` shares are uniform and independent of the secret;
  any `t` reconstruct it, so up to `n - t` holders may be missing. Given `k > t` shares, those
  that do not lie on one polynomial of degree `t - 1` are detected, and when `k >= t + 2e` the
  `e` wrong ones are named (Reed-Solomon unique decoding); with only `t + 1` shares a wrong share
  is detected but any of them could be the wrong one.

Randomness is passed in (see `compute.randomness`). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compute import field
from compute.errors import MissingSharesError, ShareInconsistencyError, SharingError
from compute.randomness import Randomness, random_words

Shares = Mapping[int, NDArray[np.uint64]]
"""Shares by holder index (1..n)."""

RING_CAPACITY = 2**63 - 1
"""Largest magnitude a signed sum can reach in Z_2^64 and still decode exactly."""

_MAX_HOLDERS = 64


class Scheme(Protocol):
    """What the reduce and the aggregation round need from a sharing scheme."""

    @property
    def name(self) -> str: ...
    @property
    def n(self) -> int: ...
    @property
    def threshold(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def lazy_terms(self) -> int:
        """How many shares may be added with plain uint64 `+` before `normalize`."""
        ...

    def share(self, secret: ArrayLike, rng: Randomness) -> NDArray[np.uint64]: ...
    def normalize(self, values: NDArray[np.uint64]) -> NDArray[np.uint64]: ...
    def reconstruct(self, shares: Shares) -> NDArray[np.int64]: ...
    def add(self, a: NDArray[np.uint64], b: NDArray[np.uint64]) -> NDArray[np.uint64]: ...
    def sum(self, shares: NDArray[np.uint64]) -> NDArray[np.uint64]: ...
    def weighted_sum(
        self, shares: NDArray[np.uint64], weights: Sequence[int]
    ) -> NDArray[np.uint64]: ...


def _check_holders(n: int, threshold: int) -> None:
    if not 1 <= threshold <= n <= _MAX_HOLDERS:
        raise SharingError(
            f"need 1 <= threshold <= n <= {_MAX_HOLDERS}, got threshold={threshold}, n={n}"
        )


def _stack(shares: Shares, n: int) -> tuple[list[int], NDArray[np.uint64]]:
    holders = sorted(shares)
    if any(not 1 <= h <= n for h in holders):
        raise SharingError(f"holder indices must be in 1..{n}, got {holders}")
    arrays = [np.asarray(shares[h]) for h in holders]
    if any(a.shape != arrays[0].shape or a.dtype != np.uint64 for a in arrays):
        raise SharingError("shares must all be uint64 arrays of one shape")
    if not arrays:
        return holders, np.zeros((0, 1), dtype=np.uint64)
    return holders, np.stack([np.atleast_1d(a) for a in arrays])


def _secret(secret: ArrayLike) -> tuple[NDArray[np.int64], tuple[int, ...]]:
    """The secret as an int64 array of at least one dimension, and its original shape (the
    arithmetic below writes into rows, which a 0-d array does not have)."""
    value = np.asarray(secret, dtype=np.int64)
    return np.atleast_1d(value), value.shape


def _like(values: NDArray[np.int64], shares: Shares) -> NDArray[np.int64]:
    """`values` in the shape of the shares it was reconstructed from."""
    shape = np.shape(next(iter(shares.values())))
    return values.reshape(shape)


@dataclass(frozen=True)
class AdditiveScheme:
    """n-of-n additive sharing over Z_2^64."""

    n: int = 3

    def __post_init__(self) -> None:
        _check_holders(self.n, self.n)
        if self.n < 2:
            raise SharingError("additive sharing needs at least 2 holders")

    @property
    def name(self) -> str:
        return "additive"

    @property
    def threshold(self) -> int:
        return self.n

    @property
    def capacity(self) -> int:
        return RING_CAPACITY

    @property
    def lazy_terms(self) -> int:
        return 2**62  # wrapping is the ring's own arithmetic: never needs normalizing

    def share(self, secret: ArrayLike, rng: Randomness) -> NDArray[np.uint64]:
        """Shares of `secret` (int64, any shape), shape `(n, *secret.shape)`."""
        signed, shape = _secret(secret)
        value = signed.view(np.uint64)
        shares = np.empty((self.n, *value.shape), dtype=np.uint64)
        random_words(rng, (self.n - 1, *value.shape), out=shares[:-1])
        last = np.subtract(value, shares[0], out=shares[-1])
        for mask in shares[1:-1]:
            np.subtract(last, mask, out=last)
        return shares.reshape((self.n, *shape))

    def reconstruct(self, shares: Shares) -> NDArray[np.int64]:
        """The secret from all `n` shares. A wrong share goes undetected."""
        holders, stacked = _stack(shares, self.n)
        if len(holders) != self.n:
            missing = sorted(set(range(1, self.n + 1)) - set(holders))
            raise MissingSharesError(
                f"additive sharing needs all {self.n} shares; missing holders {missing}"
            )
        return _like(self.sum(stacked).view(np.int64), shares)

    def add(self, a: NDArray[np.uint64], b: NDArray[np.uint64]) -> NDArray[np.uint64]:
        return a + b

    def normalize(self, values: NDArray[np.uint64]) -> NDArray[np.uint64]:
        return values

    def sum(self, shares: NDArray[np.uint64]) -> NDArray[np.uint64]:
        """Sum over axis 0 in Z_2^64."""
        total: NDArray[np.uint64] = shares.sum(axis=0, dtype=np.uint64)
        return total

    def weighted_sum(
        self, shares: NDArray[np.uint64], weights: Sequence[int]
    ) -> NDArray[np.uint64]:
        """`sum_i weights[i] * shares[i]` in Z_2^64 (negative weights wrap, as they should)."""
        w = np.asarray([int(x) % 2**64 for x in weights], dtype=np.uint64)
        if w.shape[0] != shares.shape[0]:
            raise SharingError(f"{w.shape[0]} weights for {shares.shape[0]} shares")
        return np.tensordot(w, shares, axes=(0, 0)).astype(np.uint64)


@dataclass(frozen=True)
class ShamirScheme:
    """t-of-n Shamir sharing over GF(2^61 - 1), holder `i` at evaluation point `i`."""

    n: int = 3
    t: int = 2

    def __post_init__(self) -> None:
        _check_holders(self.n, self.t)

    @property
    def name(self) -> str:
        return "shamir"

    @property
    def threshold(self) -> int:
        return self.t

    @property
    def capacity(self) -> int:
        return field.CAPACITY

    @property
    def lazy_terms(self) -> int:
        return field.SUM_ROWS

    def share(self, secret: ArrayLike, rng: Randomness) -> NDArray[np.uint64]:
        """Shares of `secret` (int64 of magnitude up to 2^60 - 1), shape `(n, *shape)`."""
        signed, shape = _secret(secret)
        constant = field.from_signed(signed)
        shares = np.empty((self.n, *constant.shape), dtype=np.uint64)
        coefficients = field.random_elements(rng, (self.t - 1, *constant.shape))
        if self.t == 2:
            # f(i) = f(i - 1) + a: one addition per holder (the common 2-of-n case).
            previous, scratch = constant, np.empty_like(constant)
            for row in shares:
                np.add(previous, coefficients[0], out=row)
                previous = field.normalize(row, scratch)
        else:
            for index, row in enumerate(shares, start=1):
                row[...] = self._evaluate(constant, coefficients, index)
        return shares.reshape((self.n, *shape))

    @staticmethod
    def _evaluate(
        constant: NDArray[np.uint64], coefficients: NDArray[np.uint64], x: int
    ) -> NDArray[np.uint64]:
        """Horner's rule for `f(x)` with `f(0) = constant`."""
        small = x <= 8
        value = np.zeros_like(constant)
        for coefficient in coefficients[::-1]:
            value = field.add(coefficient, value)
            value = field.mul_small(value, x) if small else field.mul(value, x)
        return field.add(value, constant)

    def reconstruct(self, shares: Shares) -> NDArray[np.int64]:
        """The secret from at least `t` shares, checking any extra shares for consistency.

        Raises `MissingSharesError` with fewer than `t` shares, and `ShareInconsistencyError`
        when the shares disagree, naming the wrong holders when that is possible.
        """
        holders, stacked = _stack(shares, self.n)
        if len(holders) < self.t:
            raise MissingSharesError(
                f"Shamir {self.t}-of-{self.n} needs {self.t} shares, got {len(holders)} "
                f"(holders {holders})"
            )
        if len(holders) > self.t:
            self._check_consistency(holders, stacked)
        secret = field.to_signed(self._interpolate(holders[: self.t], stacked[: self.t], 0))
        return _like(secret, shares)

    def add(self, a: NDArray[np.uint64], b: NDArray[np.uint64]) -> NDArray[np.uint64]:
        return field.add(a, b)

    def normalize(self, values: NDArray[np.uint64]) -> NDArray[np.uint64]:
        return field.reduce(values)

    def sum(self, shares: NDArray[np.uint64]) -> NDArray[np.uint64]:
        """Sum over axis 0 in the field."""
        return field.sum_rows(shares)

    def weighted_sum(
        self, shares: NDArray[np.uint64], weights: Sequence[int]
    ) -> NDArray[np.uint64]:
        """`sum_i weights[i] * shares[i]` in the field, for public integer weights."""
        if len(weights) != shares.shape[0]:
            raise SharingError(f"{len(weights)} weights for {shares.shape[0]} shares")
        return field.dot(weights, shares)

    def inconsistent(self, shares: Shares) -> NDArray[np.bool_]:
        """Element mask: where the shares do not lie on one polynomial of degree `t - 1`."""
        holders, stacked = _stack(shares, self.n)
        mismatch = self._mismatch(holders, stacked)
        return mismatch.reshape(np.shape(next(iter(shares.values()))))

    @staticmethod
    def _interpolate(
        holders: Sequence[int], stacked: NDArray[np.uint64], at: int
    ) -> NDArray[np.uint64]:
        return field.dot(field.lagrange_coefficients(holders, at), stacked)

    def _mismatch(self, holders: Sequence[int], stacked: NDArray[np.uint64]) -> NDArray[np.bool_]:
        base, rows = list(holders[: self.t]), stacked[: self.t]
        bad = np.zeros(stacked.shape[1:], dtype=bool)
        for extra, row in zip(holders[self.t :], stacked[self.t :], strict=True):
            bad |= self._interpolate(base, rows, extra) != row
        return bad

    def _check_consistency(self, holders: list[int], stacked: NDArray[np.uint64]) -> None:
        if not self._mismatch(holders, stacked).any():
            return
        k = len(holders)
        # Unique decoding: e wrong shares can be located when k >= t + 2e.
        for errors in range(1, (k - self.t) // 2 + 1):
            explained = [
                wrong
                for wrong in combinations(range(k), errors)
                if not self._mismatch(
                    [h for i, h in enumerate(holders) if i not in wrong],
                    np.delete(stacked, wrong, axis=0),
                ).any()
            ]
            if len(explained) == 1:
                named = tuple(holders[i] for i in explained[0])
                raise ShareInconsistencyError(
                    f"Shamir shares are inconsistent: holder(s) {list(named)} sent shares that "
                    f"disagree with the other {k - errors}; exclude them and reconstruct again",
                    holders=named,
                    suspects=named,
                )
        why = (
            f"naming one wrong share needs {self.t + 2}"
            if k < self.t + 2
            else f"{k} shares locate at most {(k - self.t) // 2} wrong ones"
        )
        raise ShareInconsistencyError(
            f"Shamir shares from holders {holders} are inconsistent, and {k} shares at "
            f"threshold {self.t} are too few to tell which is wrong ({why}); the result cannot "
            "be trusted",
            holders=(),
            suspects=tuple(holders),
        )


def scheme_named(name: str, n: int = 3, threshold: int | None = None) -> Scheme:
    """The scheme a proposal names: `"additive"` (n-of-n) or `"shamir"` (threshold-of-n, 2 by
    default)."""
    if name == "additive":
        if threshold not in (None, n):
            raise SharingError(f"additive sharing is {n}-of-{n}; threshold {threshold} given")
        return AdditiveScheme(n)
    if name == "shamir":
        return ShamirScheme(n, 2 if threshold is None else threshold)
    raise SharingError(f"unknown sharing scheme {name!r}; use 'additive' or 'shamir'")
