"""`market bench reduce`: secure share + reduce against a plaintext NumPy sum of the same data.

For each vector length, `providers` encoded int64 vectors are drawn once (outside any timing).

- `plain_s`: `np.sum(data, axis=0)` over the `(providers, length)` int64 matrix.
- `secure_s`: the whole secure sum over the same matrix, one thread: every provider shares its
  vector with the production random generator (`AesCtrRandom`, the stream `os_rng()` gives,
  here keyed from `seed`), every heavy node sums the shares it would receive
  (`reduce.partial`), and the partials are reconstructed into the aggregate
  (`reduce.combine`, which for Shamir also checks the extra share for consistency). Providers
  and columns are processed in blocks, as a streaming heavy node would, so the working set
  stays in cache; no message objects or serialization are timed.
- `ratio`: `secure_s / plain_s`.

Both are the best of a few runs, measured in the same process one after the other. The secure
result is checked against the plaintext sum after timing.
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
"""Elements (providers x columns) shared and summed per step: the shares of one step (1.5 MiB
for three holders) stay in a 2 MiB L2 cache, and there are few enough steps that NumPy's
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


def _best(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _repeats(elements: int) -> int:
    return 3 if elements >= 10**7 else 5 if elements >= 10**5 else 20


def run_reduce_bench(
    providers: int = 1000,
    lengths: Sequence[int] = (1, 1000, 100000),
    schemes: Sequence[str] = ("additive", "shamir"),
    seed: int = 0,
) -> BenchResult:
    """Time secure share + reduce against the plaintext sum; see the module docstring.

    Returns `{scheme: {str(length): {"secure_s", "plain_s", "ratio"}}}`.
    """
    data_rng = np.random.default_rng(seed)
    result: BenchResult = {name: {} for name in schemes}
    for length in lengths:
        data = _FIELD.encode(data_rng.uniform(-1.0, 1.0, size=(providers, length)))
        repeats = _repeats(data.size)
        expected = np.sum(data, axis=0)
        plain_s = _best(lambda: np.sum(data, axis=0), repeats)  # noqa: B023 (timed at once)
        for name in schemes:
            scheme = scheme_named(name)
            rng = AesCtrRandom.from_seed(f"{seed}/{name}/{length}")
            secure_s = _best(lambda: secure_sum(scheme, data, rng), repeats)  # noqa: B023
            if not np.array_equal(secure_sum(scheme, data, rng), expected):
                raise AssertionError(f"{name} secure sum differs from the plaintext sum")
            result[name][str(length)] = {
                "secure_s": secure_s,
                "plain_s": plain_s,
                "ratio": secure_s / plain_s,
            }
    return result


def format_reduce_table(result: BenchResult, providers: int = 1000) -> str:
    """The benchmark as a fixed-width table: one row per scheme and length, with throughput in
    millions of provider values per second (`providers` must match the run) and the ratio."""
    header = (
        f"{'scheme':<10}{'length':>8}{'secure s':>12}{'plain s':>12}"
        f"{'secure Mval/s':>15}{'plain Mval/s':>14}{'ratio':>9}"
    )
    lines = [header, "-" * len(header)]
    for name, by_length in result.items():
        for length, row in by_length.items():
            values = providers * int(length) / 1e6
            lines.append(
                f"{name:<10}{length:>8}{row['secure_s']:>12.6f}{row['plain_s']:>12.6f}"
                f"{values / row['secure_s']:>15.1f}{values / row['plain_s']:>14.1f}"
                f"{row['ratio']:>8.1f}x"
            )
    return "\n".join(lines)
