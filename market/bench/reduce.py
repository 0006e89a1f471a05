"""`market bench reduce`: the secure sum, in all and party by party, against a plaintext NumPy
sum of the same data.

For each vector length, `providers` encoded int64 vectors (one `(providers, length)` matrix) are
drawn once, outside any timing. Every figure is the best of a few runs, all measured in the same
process one after the other:

- `plain_s`: `np.sum(data, axis=0)`, the plaintext sum of every provider's vector (what one
  trusted aggregator holding them all would do).
- `secure_s`, `ratio` (`secure_s / plain_s`): every party's work summed on one core
  (`secure_sum`, no seeds): every provider shares its vector with the production generator
  (`AesCtrRandom`, here keyed from `seed`), every heavy node sums the shares it would receive
  (`PartialSum`), and the partials are reconstructed (`combine`, which for Shamir also checks the
  extra share). Providers and columns are processed in blocks, as a streaming heavy node would.

Each party's own work, with seed compression (`Scheme.share_seeded`; provider `p` seeds the
holders `scheme.seed_holders(p)`, so every heavy node receives as many seeds as every other):

- `provider_s`: one provider sharing its one vector (drawing its seeds, expanding them and
  computing the vectors it sends), the mean over all providers. `provider_ratio` is
  `provider_s / (plain_s / providers)`: against that provider's own part of the plaintext sum,
  adding its one vector into the total.
- `heavy_s`: one heavy node's reduce, the slowest of the `n`: its running sum (`PartialSum`) of
  the `providers` shares it received, expanding the seeds among them; the shares are in memory
  as arrays (opening sealed boxes and decoding messages are not timed). `heavy_ratio` is
  `heavy_s / plain_s`: a heavy node adds `providers` shares where the plaintext sum adds
  `providers` vectors. `heavy_seed_ratio` and `heavy_vector_ratio`: what one received seed and
  one received vector cost that node, each against adding one plaintext vector
  (`plain_s / providers`).
- `combine_s`, `combine_ratio` (`combine_s / plain_s`): reconstructing the aggregate from the `n`
  partials.
- `upload_bytes`: what one provider sends, all holders together (seeds and share vectors; no
  framing or sealing). `upload_ratio` is `upload_bytes / (8 * length)`: against its plaintext
  int64 vector.
- `seeded_ratio`: the seeded parties' work summed, `(providers * provider_s + every heavy node's
  reduce + combine_s) / plain_s`: the counterpart of `ratio` with seed compression.

Both secure results are checked against the plaintext sum after timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from compute.encoding import FieldSpec
from compute.randomness import AesCtrRandom, Randomness
from compute.reduce import PartialSum, combine
from compute.sharing import Scheme, scheme_named

BenchResult = dict[str, dict[str, dict[str, float]]]

_BLOCK = 1 << 16
"""Elements (providers x columns) shared and summed per step by `secure_sum`: the shares of one
step (1.5 MiB for three holders) stay in cache, and there are few enough steps that NumPy's
per-call overhead stays small. 2^16 measured fastest here among 2^14..2^18."""

_FIELD = FieldSpec("bench", -1.0, 1.0, scale=1 << 20)


def secure_sum(scheme: Scheme, data: NDArray[np.int64], rng: Randomness) -> NDArray[np.int64]:
    """Share every row of `data` (one provider each), let every holder sum its shares, and
    reconstruct the column sums from the holders' partials."""
    providers, length = data.shape
    cols = min(length, _BLOCK)
    rows = max(1, _BLOCK // cols)
    partials = np.empty((scheme.n, length), dtype=np.uint64)
    for c0 in range(0, length, cols):
        width = min(cols, length - c0)
        sums = [PartialSum(scheme, width) for _ in range(scheme.n)]
        for r0 in range(0, providers, rows):
            shares = scheme.share(data[r0 : r0 + rows, c0 : c0 + width], rng)
            for holder, running in enumerate(sums):
                running.add(shares[holder])
        for holder, running in enumerate(sums):
            partials[holder, c0 : c0 + width] = running.value
    return combine(scheme, {h + 1: partials[h] for h in range(scheme.n)})


class Received:
    """What one heavy node holds after every provider has shared with seeds: the seeds sent to
    it, in arrival order, and the share vectors, one row each."""

    def __init__(self, scheme: Scheme, providers: int, length: int, holder: int) -> None:
        vectors = sum(holder not in scheme.seed_holders(p) for p in range(providers))
        self.seeds: list[bytes] = []
        self.vectors = np.empty((vectors, length), dtype=np.uint64)
        self._rows = 0

    def reset(self) -> None:
        self.seeds.clear()
        self._rows = 0

    def receive_vector(self, vector: NDArray[np.uint64]) -> None:
        self.vectors[self._rows] = vector
        self._rows += 1

    def reduce(self, scheme: Scheme) -> tuple[NDArray[np.uint64], float, float]:
        """This node's partial, and the seconds spent on the seeds and on the vectors."""
        start = time.perf_counter()
        running = PartialSum(scheme, self.vectors.shape[1])
        running.add_seeds(self.seeds)
        middle = time.perf_counter()
        running.add(self.vectors)
        value = running.value
        return value, middle - start, time.perf_counter() - middle


def share_all_seeded(
    scheme: Scheme, data: NDArray[np.int64], rng: Randomness, received: Sequence[Received]
) -> tuple[float, int]:
    """Every provider shares its row with seeds into the holders' `received`; returns the
    seconds spent sharing (not delivering) and provider 0's upload in bytes."""
    for node in received:
        node.reset()
    spent, upload = 0.0, 0
    for provider, row in enumerate(data):
        start = time.perf_counter()
        shares = scheme.share_seeded(row, rng, scheme.seed_holders(provider))
        spent += time.perf_counter() - start
        upload = upload or shares.upload_bytes
        for holder, seed in shares.seeds.items():
            received[holder - 1].seeds.append(seed)
        for holder, vector in shares.vectors.items():
            received[holder - 1].receive_vector(vector)
    return spent, upload


def _best(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _repeats(elements: int) -> int:
    return 3 if elements >= 10**7 else 5 if elements >= 10**5 else 20


def per_party(
    scheme: Scheme, data: NDArray[np.int64], rng: Randomness, repeats: int
) -> tuple[dict[str, float], NDArray[np.int64]]:
    """Each party's own work with seed compression (seconds and bytes; see the module
    docstring), and the aggregate the seeded shares reconstruct to."""
    providers, length = data.shape
    received = [Received(scheme, providers, length, h) for h in range(1, scheme.n + 1)]
    provider_s, upload = float("inf"), 0
    for _ in range(repeats):
        spent, upload = share_all_seeded(scheme, data, rng, received)
        provider_s = min(provider_s, spent / providers)
    heavy = []  # per node: (best total, its seeds part, its vectors part)
    partials: dict[int, NDArray[np.uint64]] = {}
    for holder, node in enumerate(received, start=1):
        runs = [node.reduce(scheme) for _ in range(repeats)]
        partials[holder] = runs[-1][0]
        seeds_s, vectors_s = min(r[1] for r in runs), min(r[2] for r in runs)
        heavy.append((min(r[1] + r[2] for r in runs), seeds_s, vectors_s, node))
    combine_s = _best(lambda: combine(scheme, partials), repeats)
    slowest, seeds_s, vectors_s, node = max(heavy, key=lambda h: h[0])
    figures = {
        "provider_s": provider_s,
        "heavy_s": slowest,
        "heavy_seed_s": seeds_s / len(node.seeds) if node.seeds else 0.0,
        "heavy_vector_s": vectors_s / len(node.vectors) if len(node.vectors) else 0.0,
        "heavy_total_s": sum(h[0] for h in heavy),
        "combine_s": combine_s,
        "upload_bytes": float(upload),
    }
    return figures, combine(scheme, partials)


def run_reduce_bench(
    providers: int = 1000,
    lengths: Sequence[int] = (1, 1000, 100000),
    schemes: Sequence[str] = ("additive", "shamir"),
    seed: int = 0,
) -> BenchResult:
    """Time secure share + reduce, in all and party by party, against the plaintext sum; see
    the module docstring.

    Returns `{scheme: {str(length): figures}}`, the figures being `plain_s`, `secure_s`, `ratio`,
    `provider_s`, `provider_ratio`, `heavy_s`, `heavy_ratio`, `heavy_seed_ratio`,
    `heavy_vector_ratio`, `combine_s`, `combine_ratio`, `upload_bytes`, `upload_ratio` and
    `seeded_ratio`.
    """
    data_rng = np.random.default_rng(seed)
    result: BenchResult = {name: {} for name in schemes}
    for length in lengths:
        data = _FIELD.encode(data_rng.uniform(-1.0, 1.0, size=(providers, length)))
        repeats = _repeats(data.size)
        expected = np.sum(data, axis=0)
        plain_s = _best(lambda: np.sum(data, axis=0), repeats)  # noqa: B023 (timed at once)
        per_vector = plain_s / providers
        for name in schemes:
            scheme = scheme_named(name)
            rng = AesCtrRandom.from_seed(f"{seed}/{name}/{length}")
            secure_s = _best(lambda: secure_sum(scheme, data, rng), repeats)  # noqa: B023
            if not np.array_equal(secure_sum(scheme, data, rng), expected):
                raise AssertionError(f"{name} secure sum differs from the plaintext sum")
            party, total = per_party(scheme, data, rng, repeats)
            if not np.array_equal(total, expected):
                raise AssertionError(f"{name} seeded secure sum differs from the plaintext sum")
            seeded_s = providers * party["provider_s"] + party["heavy_total_s"] + party["combine_s"]
            result[name][str(length)] = {
                "plain_s": plain_s,
                "secure_s": secure_s,
                "ratio": secure_s / plain_s,
                "provider_s": party["provider_s"],
                "provider_ratio": party["provider_s"] / per_vector,
                "heavy_s": party["heavy_s"],
                "heavy_ratio": party["heavy_s"] / plain_s,
                "heavy_seed_ratio": party["heavy_seed_s"] / per_vector,
                "heavy_vector_ratio": party["heavy_vector_s"] / per_vector,
                "combine_s": party["combine_s"],
                "combine_ratio": party["combine_s"] / plain_s,
                "upload_bytes": party["upload_bytes"],
                "upload_ratio": party["upload_bytes"] / (8 * length),
                "seeded_ratio": seeded_s / plain_s,
            }
    return result


def format_reduce_table(result: BenchResult, providers: int = 1000) -> str:
    """The benchmark as a fixed-width table: one row per scheme and length, with the plaintext
    throughput in millions of provider values per second (`providers` must match the run), the
    all-parties ratio, and each party's ratio to its part of the plaintext sum (see the module
    docstring): one provider's sharing, the slowest heavy node's reduce, the combine, and one
    provider's upload in bytes against its plaintext vector's."""
    header = (
        f"{'scheme':<10}{'length':>8}{'plain s':>11}{'plain Mval/s':>14}{'all parties':>13}"
        f"{'seeded':>9}{'provider':>10}{'heavy':>8}{'combine':>9}{'upload':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, by_length in result.items():
        for length, row in by_length.items():
            values = providers * int(length) / 1e6
            lines.append(
                f"{name:<10}{length:>8}{row['plain_s']:>11.6f}{values / row['plain_s']:>14.1f}"
                f"{row['ratio']:>12.1f}x{row['seeded_ratio']:>8.1f}x"
                f"{row['provider_ratio']:>9.1f}x{row['heavy_ratio']:>7.2f}x"
                f"{row['combine_ratio']:>8.3f}x{row['upload_ratio']:>7.2f}x"
            )
    return "\n".join(lines)
