"""Dot products of two secret-shared vectors, opened one per participant: a valuation job's
total influences `q . G_p`, computed by the committee so that no single party decides them.
Pure: values in, values out; randomness passed in.

Who holds what. The buyer shares its query `q` (k numbers, fixed point) with Shamir t-of-n at
posting, and commits to each holder's share in the proposal (`commit_share`: SHA-256 of the
holder, a nonce and the share), so it cannot change `q` after posting; each member checks its
share against that commitment (`check_share`). Each provider shares `G_p`, its summed
projected gradient (k numbers, fixed point, each within `G_BOUND`), like any contribution.

**The multiplication: local products of Shamir shares, re-randomized, opened at degree 2t-2.**
Shares are points of polynomials of degree t-1; member i's `sum_j [q_j](i) [G_pj](i)` is the
point at i of a polynomial of degree 2t-2 whose value at 0 is `q . G_p`, so 2t-1 such points
open it (`ShamirScheme(n, 2t-1)`, whose checks apply: `product_scheme`). Opened as they are,
those polynomials would show more than their value at 0 (their other coefficients mix `q`
with the dealers' randomness, and a member with a provider's `G_p` in hand, its own sybil,
would learn one linear equation in `q` per such provider). So each member first adds its share
of a fresh sharing of zero of degree 2t-2 for every value opened (`zero_masks`: each member
deals one to its peers in its agreement, and the sum of all members' masks is uniform unless
every member colludes). The opened polynomial is then uniform but for its value at 0.

Dropouts and cheaters, with n members and threshold t (needs n >= 2t-1):
- 2t-1 members must send their products: n - 2t + 1 may be missing;
- with more than 2t-1 products a wrong one is detected (2-of-4), and with 2t-1+2e of them e
  wrong ones are named (2-of-5 names one), by the degree-(2t-2) scheme's Reed-Solomon check;
- with exactly 2t-1 products a member that sends a wrong product shifts the totals undetected.
- Privacy holds against any t-1 members: their shares of `q` and of every `G_p` are uniform,
  and what is opened is the totals alone.

The proposal's rule that t be a strict majority of the committee (privacy against any
minority, for every kind) leaves only odd committees at t = (n + 1) / 2, where 2t-1 = n: every
member is needed (one missing aborts the job, which refunds the buyer) and a wrong product is
not detected, so for a valuation's totals the committee is semi-honest, as an additive one is
for sums. Detection and dropouts need t <= n/2, which gives up privacy against a half of the
committee; this module supports it (and its tests show it) but no proposal asks for it. The
alternatives and why they were not taken are in docs/valuation.md.

**What is opened and checked.** One value per participant, and one more: `q . q`, which bounds
`|q . G_p| <= |q| |G_p|` (Cauchy-Schwarz). The buyer's encoded `q` must have `|q|^2 <=
Q_NORM_SQUARED` (else `QueryRejected`: the buyer shared a query beyond its terms, or shares not
on one polynomial, which open to a random value); an honest provider's `|G_p| <= sqrt(k)
G_BOUND`. So a total beyond `total_bound(k)` is not an honest provider's: it is void (earns
nothing). A provider that shares values outside the field's honest range (to make its total
wrap) does not know `q` and lands within the bound with probability below 2^-5 (the bound is
about 2^55 of the field's 2^61); a provider that shares large in-range values gains at most
what `max_examples` rows of gradients aligned with `q` would earn, which it cannot aim at
without `q`.

Precision: `q` at `2^q_bits` and `G_p` at `2^g_bits`; the opened integer over
`2^(q_bits + g_bits)` is `q . G_p` within `error_bound` (rounding of both vectors).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compute import field
from compute.encoding import FieldSpec
from compute.errors import ComputeError
from compute.randomness import Randomness, random_words
from compute.reduce import ReduceOp, Reduction
from compute.sharing import ShamirScheme

Q_NORM_BITS = 24
"""The buyer's encoded query has Euclidean norm at most 2^24 (`encode_query` scales it so)."""
Q_NORM_SQUARED = 1 << (2 * Q_NORM_BITS)
G_BITS = 24
G_BOUND = 1 << G_BITS
"""Each encoded coordinate of a provider's `G_p` is within +-2^24 (the provider clips)."""
MAX_K = 4096
"""The largest projection a committee total takes: `total_bound(4096)` is 2^54, within the
field's 2^60."""
NONCE_BYTES = 16


class ProductError(ComputeError, ValueError):
    """A query, a gradient or a share that does not fit the committee's dot product."""


class QueryRejected(ProductError):
    """The buyer's shared query opened beyond its terms' norm (or its shares were not on one
    polynomial): no total can be trusted, and the pool is split as when no total exists."""


def product_scheme(n: int, t: int) -> ShamirScheme:
    """The scheme the committee's products are opened with: degree 2t-2, 2t-1 points."""
    if 2 * t - 1 > n:
        raise ProductError(
            f"Shamir {t}-of-{n} cannot multiply: products need 2t-1 = {2 * t - 1} members; "
            f"use a threshold of at most {(n + 1) // 2} for {n} members"
        )
    return ShamirScheme(n, 2 * t - 1)


def total_bound(k: int) -> int:
    """The largest total an honest provider's encoded `G_p` can reach against a query within
    the norm: `2^Q_NORM_BITS * sqrt(k) * G_BOUND`, rounded up."""
    return (1 << Q_NORM_BITS) * (math.isqrt(k - 1) + 1) * G_BOUND


# --------------------------------------------------------------------------- encoding
def query_bits(q: ArrayLike) -> int:
    """The largest scale `2^bits` at which `q`'s rounded encoding has norm <= 2^Q_NORM_BITS."""
    values = _finite(q, "the query")
    norm = float(np.linalg.norm(values))
    if norm == 0.0:
        raise ProductError("the query is zero: every total would be zero")
    bits = Q_NORM_BITS - math.ceil(math.log2(norm))
    while _norm_squared(np.rint(values * 2.0**bits).astype(np.int64)) > Q_NORM_SQUARED:
        bits -= 1
    return bits


def encode_query(q: ArrayLike, bits: int) -> NDArray[np.int64]:
    values = _finite(q, "the query")
    encoded = np.rint(values * 2.0**bits).astype(np.int64)
    if len(encoded) > MAX_K:
        raise ProductError(f"a query of {len(encoded)} numbers; at most {MAX_K}")
    if _norm_squared(encoded) > Q_NORM_SQUARED:
        raise ProductError(f"the query at 2^{bits} has norm above 2^{Q_NORM_BITS}; lower bits")
    return encoded


def encode_gradient(g: ArrayLike, bits: int) -> tuple[NDArray[np.int64], int]:
    """A provider's summed gradient at `2^bits`, clipped to +-`G_BOUND`; and how many
    coordinates were clipped (a provider whose data is far larger than the buyer expected)."""
    values = _finite(g, "the gradient") * 2.0**bits
    clipped = int(np.count_nonzero(np.abs(values) > G_BOUND))
    return np.rint(np.clip(values, -G_BOUND, G_BOUND)).astype(np.int64), clipped


def gradient_reduction(k: int, g_bits: int) -> Reduction:
    """What a provider shares: one record, its summed gradient, at `2^g_bits` and clipped to
    +-`G_BOUND` (the round's reduction for a valuation job)."""
    if g_bits < 0:
        raise ProductError(f"a gradient scale of 2^{g_bits}: the scale bits must be >= 0")
    hi = G_BOUND / 2.0**g_bits
    return Reduction(ReduceOp.SUM, FieldSpec("gradient", -hi, hi, scale=1 << g_bits), width=k)


def gradient_bits(largest: float) -> int:
    """The scale at which a coordinate of magnitude `largest` (the biggest the buyer expects
    of any provider's `G_p`) still fits `G_BOUND`."""
    if not math.isfinite(largest) or largest <= 0:
        raise ProductError("the expected largest gradient coordinate must be positive")
    return G_BITS - math.ceil(math.log2(largest))


def error_bound(q_l1: float, g_l1: float, k: int, q_bits: int, g_bits: int) -> float:
    """How far a decoded total can be from `q . G_p` in floating point, from rounding `q` and
    `G_p` (not clipping): `|q|_1 2^-(g+1) + |G|_1 2^-(q+1) + k 2^-(q+g+2)`."""
    return (
        q_l1 * 2.0 ** -(g_bits + 1)
        + g_l1 * 2.0 ** -(q_bits + 1)
        + k * 2.0 ** -(q_bits + g_bits + 2)
    )


# --------------------------------------------------------------------------- the buyer
@dataclass(frozen=True)
class SharedQuery:
    """The buyer's shares of its encoded query, one per holder, with their nonces."""

    shares: NDArray[np.uint64]
    """(n, k): holder i's share is row i - 1."""
    nonces: tuple[bytes, ...]

    def commitments(self) -> list[str]:
        return [
            commit_share(i, nonce, share)
            for i, (nonce, share) in enumerate(zip(self.nonces, self.shares, strict=True), 1)
        ]


def share_query(encoded: ArrayLike, n: int, t: int, rng: Randomness) -> SharedQuery:
    product_scheme(n, t)  # refuses a threshold that cannot multiply
    shares = ShamirScheme(n, t).share(np.asarray(encoded, dtype=np.int64), rng)
    nonces = tuple(random_words(rng, NONCE_BYTES // 8).tobytes() for _ in range(n))
    return SharedQuery(shares, nonces)


def commit_share(holder: int, nonce: bytes, share: NDArray[np.uint64]) -> str:
    digest = hashlib.sha256(b"market-query-share/1")
    digest.update(holder.to_bytes(2, "big") + nonce)
    digest.update(np.ascontiguousarray(share, dtype="<u8").tobytes())
    return digest.hexdigest()


def check_share(
    commitments: Sequence[str], holder: int, nonce: bytes, share: NDArray[np.uint64], k: int
) -> None:
    """Refuse a query share that is not the one the buyer committed to for `holder`."""
    if not 1 <= holder <= len(commitments):
        raise ProductError(f"no commitment for holder {holder} ({len(commitments)} committed)")
    if share.shape != (k,) or share.size and int(share.max()) >= field.P:
        raise ProductError(f"a query share is {k} field elements")
    if commit_share(holder, nonce, share) != commitments[holder - 1]:
        raise ProductError(
            f"the query share for holder {holder} is not the one the proposal commits to"
        )


# --------------------------------------------------------------------------- members
def zero_masks(n: int, t: int, count: int, rng: Randomness) -> NDArray[np.uint64]:
    """One member's masks: `count` sharings of zero of degree 2t-2, shape (n, count); peer j
    gets row j - 1."""
    return product_scheme(n, t).share(np.zeros(count, dtype=np.int64), rng)


def product_partial(
    query_share: NDArray[np.uint64],
    gradient_shares: NDArray[np.uint64],
    masks: Sequence[NDArray[np.uint64]],
) -> NDArray[np.uint64]:
    """A member's products: for each participant (a row of `gradient_shares`, its shares of
    the participant's `G_p`) the share of `q . G_p`, and last the share of `q . q`, each plus
    this member's shares of every member's masks (`masks`, one (participants + 1,) vector per
    member, its own included)."""
    rows = np.atleast_2d(np.asarray(gradient_shares, dtype=np.uint64))
    if rows.shape[1] != len(query_share):
        raise ProductError(
            f"gradient shares of {rows.shape[1]} numbers; the query has {len(query_share)}"
        )
    value = np.append(_dot(rows, query_share), _dot(query_share[None, :], query_share))
    for mask in masks:
        if mask.shape != value.shape:
            raise ProductError(f"a mask of {mask.shape} for {value.shape} products")
        value = field.add(value, mask)
    return value


def _dot(rows: NDArray[np.uint64], vector: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """`rows @ vector` in the field, one product matrix at a time, summed lazily."""
    return field.sum_rows(np.ascontiguousarray(field.mul(rows, vector[None, :]).T))


@dataclass(frozen=True)
class Totals:
    """What the committee opened: each participant's total (None when void), as integers at
    `2^(q_bits + g_bits)`, and the query's squared norm."""

    totals: tuple[int | None, ...]
    query_norm_squared: int
    scale_bits: int

    def influence(self) -> list[float | None]:
        return [None if t is None else t / 2.0**self.scale_bits for t in self.totals]


def open_totals(
    products: Mapping[int, NDArray[np.uint64]], n: int, t: int, k: int, scale_bits: int
) -> Totals:
    """The totals from members' products (holder -> vector), checked: raises
    `MissingSharesError` with fewer than 2t-1, `ShareInconsistencyError` (naming the wrong
    holders where it can) when they disagree, `QueryRejected` when `q . q` is beyond the norm."""
    return check_totals(product_scheme(n, t).reconstruct(dict(products)), k, scale_bits)


def check_totals(opened: ArrayLike, k: int, scale_bits: int) -> Totals:
    """Opened products (each participant's, then `q . q`) as `Totals`: a total beyond an honest
    provider's reach is void; `QueryRejected` when the query's norm is out of its terms."""
    values = [int(v) for v in np.asarray(opened, dtype=np.int64)]
    norm_squared = values[-1]
    if not 0 < norm_squared <= Q_NORM_SQUARED:
        raise QueryRejected(
            "the buyer's query opened beyond its terms (its squared norm is not within "
            f"(0, 2^{2 * Q_NORM_BITS}]): its shares were out of range or not on one polynomial"
        )
    bound = total_bound(k)
    totals = tuple(v if abs(v) <= bound else None for v in values[:-1])
    return Totals(totals, norm_squared, scale_bits)


@dataclass(frozen=True, eq=False)
class ProductPlan:
    """A round that opens each participant's `q . G_p` (a valuation job's): the query's
    length and scales, and this member's share of the query, pending (None) until the buyer's
    shares reach the committee (the round collects meanwhile and closes only once it is set)."""

    k: int
    q_bits: int
    g_bits: int
    query_share: NDArray[np.uint64] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ProductError(f"a query of {self.k} numbers; between 1 and {MAX_K}")
        if self.query_share is not None and np.shape(self.query_share) != (self.k,):
            raise ProductError(f"a query share is {self.k} field elements")

    @property
    def pending(self) -> bool:
        return self.query_share is None

    @property
    def scale_bits(self) -> int:
        return self.q_bits + self.g_bits

    def decode(self, opened: ArrayLike) -> NDArray[np.float64]:
        """Opened integers (totals, then `q . q`) in floating point at the plan's scale."""
        return np.asarray(opened, dtype=np.int64).astype(np.float64) / 2.0**self.scale_bits

    @property
    def known(self) -> NDArray[np.uint64]:
        if self.query_share is None:
            raise ProductError("the buyer's query share has not arrived")
        return self.query_share


def plain_totals(q: ArrayLike, gradients: ArrayLike) -> list[int]:
    """The encoded totals in the clear (exact integers): the reference the committee's
    opened totals must equal."""
    qs = [int(v) for v in np.asarray(q, dtype=np.int64)]
    return [sum(a * b for a, b in zip(qs, (int(v) for v in row), strict=True))
            for row in np.atleast_2d(np.asarray(gradients, dtype=np.int64))]  # fmt: skip


def _finite(values: ArrayLike, what: str) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ProductError(f"{what} must be finite numbers, at least one")
    return array


def _norm_squared(encoded: NDArray[np.int64]) -> int:
    return sum(int(v) * int(v) for v in encoded)
