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

**Seed compression** (`share_seeded`): a share that is pure randomness need not travel as a
vector. The provider draws a `SEED_BYTES` seed for its holder instead, and that holder's share
is the seed's expansion (`seed_share`): the AES-128 counter-mode stream keyed with the seed,
word for word what `AesCtrRandom(seed)` gives (for Shamir, the top 61 bits of each word, the
provider drawing another seed in the rare case that gives p; see `seed_elements`). The other
shares are computed from the secret and those expansions, and sent whole:

- additive n-of-n: `n - 1` holders get seeds, and one, the *vector holder*, gets the secret
  minus their expansions; a provider uploads one vector and `(n - 1) * SEED_BYTES` bytes;
- Shamir t-of-n: a polynomial of degree `t - 1` with `f(0)` the secret is fixed by its values at
  any `t - 1` other points, and those values are uniform and independent, so `t - 1` holders get
  seeds, `f` is the polynomial through the secret and their expansions, and the other `n - t + 1`
  holders get `f(j)` as vectors. No more can be seeded: any `t` holders must determine the
  secret. With 2-of-3 a provider uploads two vectors (any scheme in which every two of three
  holders determine the secret needs at least 1.5: each two messages together carry it).

With uniform seeds the expansions are indistinguishable from uniform shares (AES as a
pseudorandom permutation), so seeded shares have the distribution of `share`'s; they lie on the
same polynomials, and sum, reconstruct and are checked exactly as `share`'s are. Which holders
get seeds is the provider's choice: `seed_holders(turn)` rotates it, so that over many providers
every holder expands as many seeds and adds as many vectors as every other.

Randomness is passed in (see `compute.randomness`). Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Protocol

import numpy as np
from Crypto.Cipher import AES
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
    def fold(
        self, values: NDArray[np.uint64], scratch: NDArray[np.uint64] | None = None
    ) -> NDArray[np.uint64]:
        """In place: a running sum brought back to one term's worth, so that `lazy_terms - 1`
        more shares may be added (not necessarily reduced: `normalize` does that)."""
        ...

    def seed_holders(self, turn: int = 0) -> tuple[int, ...]: ...
    def share_seeded(
        self, secret: ArrayLike, rng: Randomness, seeded: Sequence[int] | None = None
    ) -> SeededShares: ...
    def seed_share(
        self, seed: bytes, shape: tuple[int, ...], out: NDArray[np.uint64] | None = None
    ) -> NDArray[np.uint64]: ...
    def expand(self, shares: SeededShares) -> NDArray[np.uint64]: ...


SEED_BYTES = 16
"""Bytes of a share seed: an AES-128 key."""


@dataclass(frozen=True, eq=False)
class SeededShares:
    """One secret's shares as a provider sends them: a seed to each holder in `seeds`, a share
    vector (of `shape`) to each holder in `vectors`; every holder 1..n is in exactly one."""

    shape: tuple[int, ...]
    seeds: Mapping[int, bytes]
    vectors: Mapping[int, NDArray[np.uint64]]

    @property
    def upload_bytes(self) -> int:
        """What the provider sends, all holders together (seeds and vectors, not framing)."""
        return sum(len(s) for s in self.seeds.values()) + sum(
            v.nbytes for v in self.vectors.values()
        )


_counters = np.arange(0, dtype=np.uint64)
"""0, 1, 2, ...: the counter blocks every seed expansion encrypts, grown on demand and shared
(read only). A fresh `AesCtrRandom` would build its own on first use, which costs ten times
the encryption of 100,000 words (new pages); this is what makes expanding a seed cheap."""

_COLUMNS = 1 << 14
"""Words per step of a provider's seeded sharing (`share_seeded`): its temporaries (128 KiB
each) stay in cache and are reused by the allocator, where whole-vector temporaries are fresh
pages each time (first-touch page faults, dear on this VM). Measured sharing one 100,000-word
vector, in microseconds (best of 60, interleaved; additive 3 holders / Shamir 2-of-3 seeding
holder 1 / seeding holder 3): the whole vector in one step 440 / 2,670 / 5,680; 2^11 words
1,110 / 2,610 / 5,290; 2^12 730 / 1,720 / 3,380; 2^13 580 / 1,280 / 2,510; 2^14 490 / 1,270 /
2,170; 2^15 470 / 1,010 / 2,410; 2^16 1,050 / 2,590 / 4,990."""


def _counter_bytes(stop: int) -> memoryview:
    global _counters
    if _counters.size < stop:
        grown = np.arange(max(stop, 2 * _counters.size), dtype=np.uint64)
        grown.setflags(write=False)
        _counters = grown  # a longer array with the same prefix: safe to swap in under readers
    return _counters[:stop].view(np.uint8).data


def _seed_cipher(seed: bytes) -> object:
    if len(seed) != SEED_BYTES:
        raise SharingError(f"a share seed is {SEED_BYTES} bytes, got {len(seed)}")
    return AES.new(seed, AES.MODE_ECB)


def _stream_into(cipher: object, start: int, out: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Words `start, start + 1, ...` of the cipher's counter stream into the 1-D, contiguous
    `out`; `start` is even (a block boundary). Word `j` is half of `AES(j - j % 2, j - j % 2 + 1)`
    whatever the steps it is made in, so any split of a stream into even-started pieces
    gives the same words."""
    count = out.size
    even = count - count % 2
    if even:
        counters = _counter_bytes(start + even)[8 * start :]
        cipher.encrypt(counters, output=out[:even].view(np.uint8).data)  # type: ignore[attr-defined]
    if count % 2:  # the last word is the first half of block (start + count - 1, start + count)
        block = bytes(_counter_bytes(start + count + 1)[8 * (start + count - 1) :])
        out[-1] = np.frombuffer(cipher.encrypt(block), "<u8")[0]  # type: ignore[attr-defined]
    return out


def expand_seed(
    seed: bytes, count: int, out: NDArray[np.uint64] | None = None
) -> NDArray[np.uint64]:
    """The first `count` words of `AesCtrRandom(seed)`'s stream, which are `AES_seed` of the
    counter words `0, 1, 2, ...` two at a time (into `out`, a C-contiguous uint64 array of
    `count` words, when given)."""
    cipher = _seed_cipher(seed)
    if out is None:
        out = np.empty(count, dtype=np.uint64)
    elif out.size != count or out.dtype != np.uint64 or not out.flags.c_contiguous:
        raise SharingError(f"out must be a C-contiguous uint64 array of {count} words")
    _stream_into(cipher, 0, out.reshape(-1))
    return out


def seed_elements(
    seed: bytes, count: int, out: NDArray[np.uint64] | None = None
) -> NDArray[np.uint64]:
    """The seed's first `count` words (`expand_seed`) as field elements: their top 61 bits.

    A word whose top 61 bits are all ones gives p, which stands for 0 (it sums as 0); where
    `field.random_elements` redraws such an element, `share_seeded` redraws the seed, so an
    honest provider never sends one whose expansion holds p (probability 2^-61 per element), and
    the elements of every seed it sends are exactly what `random_elements(AesCtrRandom(seed))`
    gives: uniform in the field. That rejection is the provider's work, done once: a heavy node
    expands seeds without checking them (a provider who sends another seed only hurts its own
    share, as by sending a wrong vector)."""
    elements = expand_seed(seed, count, out)
    return np.right_shift(elements, np.uint64(3), out=elements)


def _holds_p(elements: NDArray[np.uint64]) -> bool:
    return bool(elements.size) and int(elements.max()) == field.P


def _steps(size: int) -> Iterator[slice]:
    return (slice(c, min(c + _COLUMNS, size)) for c in range(0, size, _COLUMNS))


def _draw_seed(rng: Randomness) -> bytes:
    return random_words(rng, SEED_BYTES // 8).astype("<u8").tobytes()


def _seeded_holders(n: int, seeded: Sequence[int], count: int, scheme: str) -> tuple[int, ...]:
    holders = tuple(sorted(set(seeded)))
    if (
        len(holders) != len(seeded)
        or len(holders) != count
        or not all(1 <= h <= n for h in holders)
    ):
        raise SharingError(
            f"{scheme} with {n} holders seeds exactly {count} distinct holders in 1..{n}, "
            f"got {list(seeded)}"
        )
    return holders


def _rotation(n: int, count: int, turn: int) -> tuple[int, ...]:
    """`count` holders, cyclically consecutive from holder `turn % n + 1`, sorted."""
    return tuple(sorted((turn + k) % n + 1 for k in range(count)))


def _expand(scheme: Scheme, shares: SeededShares) -> NDArray[np.uint64]:
    if sorted([*shares.seeds, *shares.vectors]) != list(range(1, scheme.n + 1)):
        raise SharingError(f"seeded shares must cover holders 1..{scheme.n} once each")
    out = np.empty((scheme.n, math.prod(shares.shape)), dtype=np.uint64)
    for holder, seed in shares.seeds.items():
        scheme.seed_share(seed, (out.shape[1],), out=out[holder - 1])
    for holder, vector in shares.vectors.items():
        out[holder - 1] = np.reshape(vector, -1)
    return out.reshape((scheme.n, *shares.shape))


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

    def fold(
        self, values: NDArray[np.uint64], scratch: NDArray[np.uint64] | None = None
    ) -> NDArray[np.uint64]:
        return values  # Z_2^64 wraps: a running sum never needs folding

    def seed_holders(self, turn: int = 0) -> tuple[int, ...]:
        """The `n - 1` holders that get seeds from the provider taking turn `turn`: all but
        holder `turn % n + 1`, the vector holder."""
        return _rotation(self.n, self.n - 1, turn + 1)

    def seed_share(
        self, seed: bytes, shape: tuple[int, ...], out: NDArray[np.uint64] | None = None
    ) -> NDArray[np.uint64]:
        """The share a seed stands for: its stream's first words, in `shape`."""
        return expand_seed(seed, math.prod(shape), out).reshape(shape)

    def share_seeded(
        self, secret: ArrayLike, rng: Randomness, seeded: Sequence[int] | None = None
    ) -> SeededShares:
        """Shares of `secret` with seeds to the `n - 1` holders in `seeded` (holders 1..n-1 by
        default) and the secret minus their expansions to the remaining one."""
        signed, shape = _secret(secret)
        holders = _seeded_holders(
            self.n, range(1, self.n) if seeded is None else seeded, self.n - 1, "additive"
        )
        (last,) = set(range(1, self.n + 1)) - set(holders)
        seeds = {h: _draw_seed(rng) for h in holders}
        ciphers = [_seed_cipher(seed) for seed in seeds.values()]
        vector = signed.view(np.uint64).reshape(-1).copy()
        mask = np.empty(min(vector.size, _COLUMNS), dtype=np.uint64)
        for step in _steps(vector.size):
            block, words = vector[step], mask[: step.stop - step.start]
            for cipher in ciphers:
                np.subtract(block, _stream_into(cipher, step.start, words), out=block)
        return SeededShares(shape, seeds, {last: vector.reshape(shape)})

    def expand(self, shares: SeededShares) -> NDArray[np.uint64]:
        """Every holder's share, stacked as `share` returns them."""
        return _expand(self, shares)


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

    def fold(
        self, values: NDArray[np.uint64], scratch: NDArray[np.uint64] | None = None
    ) -> NDArray[np.uint64]:
        return field.fold(values, scratch)

    def seed_holders(self, turn: int = 0) -> tuple[int, ...]:
        """The `t - 1` holders that get seeds from the provider taking turn `turn`: holders
        `turn % n + 1` onwards, cyclically."""
        return _rotation(self.n, self.t - 1, turn)

    def seed_share(
        self, seed: bytes, shape: tuple[int, ...], out: NDArray[np.uint64] | None = None
    ) -> NDArray[np.uint64]:
        """The share a seed stands for: uniform field elements from its stream, in `shape`."""
        return seed_elements(seed, math.prod(shape), out).reshape(shape)

    def share_seeded(
        self, secret: ArrayLike, rng: Randomness, seeded: Sequence[int] | None = None
    ) -> SeededShares:
        """Shares of `secret` with seeds to the `t - 1` holders in `seeded` (holders 1..t-1 by
        default): `f` is the polynomial of degree `t - 1` through `(0, secret)` and
        `(h, seed_share(seed_h))`, and every other holder `j` gets `f(j)`."""
        signed, shape = _secret(secret)
        holders = _seeded_holders(
            self.n, range(1, self.t) if seeded is None else seeded, self.t - 1, "Shamir"
        )
        others = [j for j in range(1, self.n + 1) if j not in holders]
        flat = signed.reshape(-1)
        vectors = np.empty((len(others), flat.size), dtype=np.uint64)
        seeds = {h: _draw_seed(rng) for h in holders}
        if self.t == 2:
            (h,) = holders
            while not self._share_line(flat, seeds[h], h, others, vectors):
                seeds[h] = _draw_seed(rng)  # its expansion holds p: a fresh seed (see above)
        else:
            points = []
            for h in holders:
                while _holds_p(point := seed_elements(seeds[h], flat.size)):
                    seeds[h] = _draw_seed(rng)
                points.append(point)
            known = np.stack([field.from_signed(flat), *points])
            for row, j in zip(vectors, others, strict=True):
                row[...] = field.dot(field.lagrange_coefficients([0, *holders], j), known)
        return SeededShares(
            shape, seeds, {j: row.reshape(shape) for j, row in zip(others, vectors, strict=True)}
        )

    @staticmethod
    def _share_line(
        flat: NDArray[np.int64],
        seed: bytes,
        h: int,
        others: Sequence[int],
        vectors: NDArray[np.uint64],
    ) -> bool:
        """2-of-n with holder `h` seeded: `f(j) = f(j - 1) + a` (the recurrence of `share`) with
        `a = (f(h) - f(0)) / h`, step by step over the columns (`f(h)` too), into `vectors`
        (one row per holder in `others`). False, and stopped, if the seed's expansion holds p."""
        cipher, inverse = _seed_cipher(seed), field.inverse(h)
        size = flat.size
        point, slope, scratch = (np.empty(min(size, _COLUMNS), np.uint64) for _ in range(3))
        for step in _steps(size):
            width = step.stop - step.start
            r, a, tmp = point[:width], slope[:width], scratch[:width]
            np.right_shift(_stream_into(cipher, step.start, r), np.uint64(3), out=r)
            if _holds_p(r):
                return False
            constant = field.from_signed(flat[step])
            np.subtract(field.P, constant, out=a)
            field.normalize(np.add(a, r, out=a), tmp)
            if h > 1:
                a = field.mul(a, inverse)
            previous, rows = constant, iter(vectors)
            for j in range(1, max(others) + 1):
                if j == h:
                    previous = r  # f(h) itself
                    continue
                previous = field.normalize(np.add(previous, a, out=next(rows)[step]), tmp)
        return True

    def expand(self, shares: SeededShares) -> NDArray[np.uint64]:
        """Every holder's share, stacked as `share` returns them."""
        return _expand(self, shares)

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
