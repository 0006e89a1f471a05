"""`market bench ensemble`: six model families on digits, ensembled under sharing."""

from __future__ import annotations

import pytest

from market.bench.ensemble import format_ensemble_table, run_ensemble_bench


@pytest.fixture(scope="module")
def result() -> dict:
    return run_ensemble_bench(seed=0)


def test_the_secure_ensemble_equals_the_plaintext_one_and_beats_every_model(result: dict) -> None:
    assert len(result["models"]) == 6
    assert result["ensemble"] == result["plain_ensemble"]
    assert result["max_abs_probability_error"] < 1e-3
    assert result["ensemble"] > max(result["models"].values())  # measured: +1.7 points
    assert result["gain_over_best"] == pytest.approx(
        result["ensemble"] - max(result["models"].values())
    )


def test_payouts_follow_the_weights_and_sum_to_the_pool(result: dict) -> None:
    payouts = {m: int(a) for m, a in result["payouts"].items()}
    assert sum(payouts.values()) == 950 * 10**18
    by_weight = sorted(result["weights"], key=result["weights"].__getitem__)
    assert [payouts[m] for m in by_weight] == sorted(payouts.values())


def test_the_table_names_every_model(result: dict) -> None:
    table = format_ensemble_table(result)
    for name in result["models"]:
        assert name in table
    assert "ensemble (secure)" in table and "gain over the best model" in table
