"""The bench and the figure, run small (their full-size figures are in docs/valuation.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from market.bench.valuation import (
    format_valuation_table,
    pearson,
    run_valuation_bench,
    spearman,
    valuation_figure,
)
from market.valuation.tip.he import TenSealCKKS


def test_correlations_match_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 200).astype(float)
    b = a + rng.standard_normal(200)
    assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)


def test_bench_reports_every_figure_per_k() -> None:
    result = run_valuation_bench(
        ks=(8, 16), examples=400, seed=1, backend=TenSealCKKS(), utility_buyers=1
    )
    for k in ("8", "16"):
        entry = result[k]
        assert {"encrypted_s", "plain_s", "bytes_per_provider", "pearson", "spearman"} <= set(entry)
        assert entry["examples"] == 400
        assert entry["pearson"] >= 0.999 and entry["spearman"] >= 0.999
        assert entry["bytes_per_provider"] == entry["bytes_down"] + entry["bytes_up"]
    assert -1.0 <= result["retrain_spearman"] <= 1.0
    assert len(result["providers"]) == 10
    json.dumps(result)  # --json prints it as is
    table = format_valuation_table(result)
    assert "retrain_spearman" in table and "flipped-100" in table
    assert result["utility_pairs"] == 39 and "TIP (hospital data)" in table


def test_figure_is_a_png(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "influence.png"
    drawn = valuation_figure(path, examples=400, seed=1, k=16)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(drawn) == 10 and {d["quality"] for d in drawn.values()} >= {"clean", "flipped"}
