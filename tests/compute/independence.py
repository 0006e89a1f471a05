"""A statistical check that a set of shares carries no information about the secret.

Shares of two different secrets are bucketed jointly (by their top bits and, separately, by
their low bits) and compared with chi-square tests: each against the uniform distribution, and
the two against each other. A correct sharer passes; a broken one (short masks, a zero
coefficient, a share that is the secret) fails by a wide margin, which the tests also check.
With fixed seeds the verdict is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

Sharer = Callable[[NDArray[np.int64], np.random.Generator], NDArray[np.uint64]]

SAMPLES = 4096
BITS = 2  # bits per share per bucket: 4^k joint buckets for k shares


def _critical(df: int, z: float = 5.0) -> float:
    """Chi-square quantile (Wilson-Hilferty) far in the tail: a false alarm is below 1e-6."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _buckets(shares: NDArray[np.uint64], modulus_bits: int) -> list[NDArray[np.int64]]:
    """Joint bucket index per sample, by top bits and by low bits of every share."""
    mask = np.uint64((1 << BITS) - 1)
    top = (shares >> np.uint64(modulus_bits - BITS)) & mask
    low = shares & mask
    out = []
    for parts in (top, low):
        index = np.zeros(shares.shape[1], dtype=np.int64)
        for row in parts:
            index = index * (1 << BITS) + row.astype(np.int64)
        out.append(index)
    return out


def worst_statistic(
    share: Sharer,
    holders: Sequence[int],
    secrets: tuple[int, int],
    modulus_bits: int,
    seed: int = 0,
) -> float:
    """The largest chi-square statistic over all checks, divided by its critical value: above 1
    means the shares held by `holders` (1-based) reveal something about the secret."""
    worst = 0.0
    by_secret = []
    for offset, secret in enumerate(secrets):
        rng = np.random.default_rng(seed + offset)
        shares = share(np.full(SAMPLES, secret, dtype=np.int64), rng)
        by_secret.append(_buckets(shares[[h - 1 for h in holders]], modulus_bits))
    cells = (1 << BITS) ** len(holders)
    for kind in range(2):
        a = np.bincount(by_secret[0][kind], minlength=cells).astype(float)
        b = np.bincount(by_secret[1][kind], minlength=cells).astype(float)
        expected = SAMPLES / cells
        for counts in (a, b):
            worst = max(worst, ((counts - expected) ** 2 / expected).sum() / _critical(cells - 1))
        both = a + b
        seen = both > 0
        two_sample = ((a[seen] - b[seen]) ** 2 / both[seen]).sum()
        worst = max(worst, two_sample / _critical(max(int(seen.sum()) - 1, 1)))
    return worst
