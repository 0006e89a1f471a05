"""The reduce benchmark's shape (its timings are measured, never asserted)."""

from __future__ import annotations

import json

import numpy as np

from compute.randomness import AesCtrRandom
from compute.sharing import SEED_BYTES, AdditiveScheme, ShamirScheme
from market.bench.reduce import (
    Received,
    format_reduce_table,
    per_party,
    run_reduce_bench,
    secure_sum,
    share_all_seeded,
)

FIGURES = {
    "plain_s", "secure_s", "ratio", "provider_s", "provider_ratio", "heavy_s", "heavy_ratio",
    "heavy_seed_ratio", "heavy_vector_ratio", "combine_s", "combine_ratio", "upload_bytes",
    "upload_ratio", "seeded_ratio",
}  # fmt: skip


def test_run_reduce_bench_returns_the_documented_json_shape() -> None:
    result = run_reduce_bench(providers=12, lengths=(1, 300))
    assert json.loads(json.dumps(result)) == result
    assert set(result) == {"additive", "shamir"}
    for name, by_length in result.items():
        assert list(by_length) == ["1", "300"]
        for length, row in by_length.items():
            assert set(row) == FIGURES
            assert row["secure_s"] > 0 and row["plain_s"] > 0
            assert row["ratio"] == row["secure_s"] / row["plain_s"]
            assert row["heavy_ratio"] == row["heavy_s"] / row["plain_s"]
            assert row["provider_ratio"] == row["provider_s"] / (row["plain_s"] / 12)
            assert row["combine_ratio"] == row["combine_s"] / row["plain_s"]
            vectors = 1 if name == "additive" else 2
            upload = vectors * 8 * int(length) + (3 - vectors) * SEED_BYTES
            assert row["upload_bytes"] == upload
            assert row["upload_ratio"] == upload / (8 * int(length))
            assert row["seeded_ratio"] > row["heavy_ratio"] > 0
    table = format_reduce_table(result, providers=12)
    assert "additive" in table and "shamir" in table and "x" in table
    assert all(word in table for word in ("all parties", "provider", "heavy", "upload"))
    assert len(table.splitlines()) == 2 + 4


def test_every_heavy_node_receives_the_same_number_of_seeds() -> None:
    data = np.random.default_rng(0).integers(-(2**40), 2**40, size=(9, 5))
    for scheme, seeds, vectors in ((AdditiveScheme(3), 6, 3), (ShamirScheme(3, 2), 3, 6)):
        received = [Received(scheme, 9, 5, h) for h in (1, 2, 3)]
        _, upload = share_all_seeded(scheme, data, AesCtrRandom.from_seed(0), received)
        assert [len(node.seeds) for node in received] == [seeds] * 3
        assert [node.vectors.shape for node in received] == [(vectors, 5)] * 3
        assert upload == (9 - seeds) // 3 * 8 * 5 + seeds // 3 * SEED_BYTES


def test_the_per_party_reduce_reconstructs_the_plaintext_sum() -> None:
    data = np.random.default_rng(1).integers(-(2**40), 2**40, size=(20, 3001))
    for scheme in (AdditiveScheme(3), ShamirScheme(3, 2)):
        figures, total = per_party(scheme, data, AesCtrRandom.from_seed(2), repeats=2)
        assert np.array_equal(total, data.sum(axis=0))
        assert figures["heavy_total_s"] >= figures["heavy_s"] > 0
        assert figures["heavy_seed_s"] > 0 and figures["heavy_vector_s"] > 0


def test_secure_sum_spans_column_blocks() -> None:
    data = np.random.default_rng(0).integers(-(2**40), 2**40, size=(9, 40_000))
    for scheme in (AdditiveScheme(3), ShamirScheme(3, 2)):
        total = secure_sum(scheme, data, AesCtrRandom.from_seed(1))
        assert np.array_equal(total, data.sum(axis=0))
