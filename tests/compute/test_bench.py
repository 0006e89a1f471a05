"""The reduce benchmark's shape (its timings are measured, never asserted)."""

from __future__ import annotations

import json

import numpy as np

from compute.bench import format_reduce_table, run_reduce_bench, secure_sum
from compute.randomness import AesCtrRandom
from compute.sharing import AdditiveScheme, ShamirScheme


def test_run_reduce_bench_returns_the_documented_json_shape() -> None:
    result = run_reduce_bench(providers=12, lengths=(1, 300))
    assert json.loads(json.dumps(result)) == result
    assert set(result) == {"additive", "shamir"}
    for by_length in result.values():
        assert list(by_length) == ["1", "300"]
        for row in by_length.values():
            assert set(row) == {"secure_s", "plain_s", "ratio"}
            assert row["secure_s"] > 0 and row["plain_s"] > 0
            assert row["ratio"] == row["secure_s"] / row["plain_s"]
    table = format_reduce_table(result, providers=12)
    assert "additive" in table and "shamir" in table and "x" in table
    assert len(table.splitlines()) == 2 + 4


def test_secure_sum_spans_column_blocks() -> None:
    data = np.random.default_rng(0).integers(-(2**40), 2**40, size=(9, 40_000))
    for scheme in (AdditiveScheme(3), ShamirScheme(3, 2)):
        total = secure_sum(scheme, data, AesCtrRandom.from_seed(1))
        assert np.array_equal(total, data.sum(axis=0))
