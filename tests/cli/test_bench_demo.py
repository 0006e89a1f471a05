"""`market bench gas`, `market bench reduce` and `market demo` through the installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from market.bench.gas import CLAIM_LIMIT, FINALIZE_FLATNESS, check_gas, run_gas_bench
from market.chain import TOKEN, Chain

MARKET = str(Path(sys.executable).with_name("market"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MARKET, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_gas_targets_hold_at_10_and_100_participants():
    with Chain.embedded() as chain:
        result = run_gas_bench(chain, (10, 100), claims=4)
    assert set(result) == {
        "approve", "stake", "stake_permit", "post", "draw", "accept", "finalize", "claim_fee",
        "claim", "claim_new_holder",
    }  # fmt: skip
    small, large = result["finalize"]["10"], result["finalize"]["100"]
    assert abs(large / small - 1) <= FINALIZE_FLATNESS
    assert max(result["claim"].values()) < CLAIM_LIMIT
    # A first-time holder pays for its new balance slot on top of an ordinary claim.
    assert result["claim_new_holder"]["100"] > result["claim"]["100"]
    # The committee's own steps do not grow with the participants.
    for op in ("draw", "accept", "claim_fee"):
        assert abs(result[op]["100"] / result[op]["10"] - 1) <= FINALIZE_FLATNESS
    assert all("ok" in line for line in check_gas(result)[:2])


def test_bench_gas_json_shape():
    proc = run("bench", "gas", "--sizes", "2,4", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for op in ("stake", "post", "draw", "accept", "finalize", "claim_fee", "claim"):
        assert set(result[op]) == {"2", "4"}
        assert all(isinstance(gas, int) and gas > 21_000 for gas in result[op].values())


def test_bench_gas_rejects_bad_sizes():
    proc = run("bench", "gas", "--sizes", "10,abc")
    assert proc.returncode == 2
    assert "comma-separated integers" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_reduce_json_shape_and_table():
    proc = run("bench", "reduce", "--providers", "20", "--lengths", "1,50", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"additive", "shamir"}
    for by_length in result.values():
        assert set(by_length) == {"1", "50"}
        for row in by_length.values():
            assert row["ratio"] == pytest.approx(row["secure_s"] / row["plain_s"])
    table = run("bench", "reduce", "--providers", "20", "--lengths", "10", "--schemes", "shamir")
    assert table.returncode == 0, table.stderr
    assert "shamir" in table.stdout and "additive" not in table.stdout


def test_bench_reduce_rejects_unknown_scheme():
    proc = run("bench", "reduce", "--schemes", "paillier")
    assert proc.returncode == 2
    assert "paillier" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bench_network_runs_a_job_to_finalization_and_reports_its_phases(tmp_path):
    env = {**os.environ, "MARKET_HOME": str(tmp_path)}
    proc = subprocess.run([MARKET, "bench", "network", "--providers", "6", "--json"],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"providers", "total_s", "phases", "setup", "per_provider_ms"} <= set(result)
    assert result["providers"] == 6 and result["state"] == "FINALIZED"
    assert result["participants"] == 6  # every provider's policy accepts the job
    assert set(result["phases"]) == {"post_and_staff", "submit", "reduce_and_finalize"}
    assert result["total_s"] == pytest.approx(sum(result["phases"].values()), abs=1e-3)
    assert set(result["setup"]) == {"deploy", "heavy_nodes", "fund_and_stake"}
    assert result["per_provider_ms"]["submit"] == pytest.approx(
        1000 * result["phases"]["submit"] / 6, rel=1e-3
    )


def test_bench_network_refuses_a_job_too_small():
    proc = run("bench", "network", "--providers", "2")
    assert proc.returncode == 2
    assert "at least 3" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_settles_and_pays_everyone():
    proc = run("demo", "--providers", "6", "--seed", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["state"] == "FINALIZED"
    assert abs(report["secure_mean"] - report["plain_mean"]) < 1e-4
    assert report["clipped"] == report["plain_clipped"]  # the committee's count, under sharing
    assert len(report["earnings"]) == report["participants"] == 5
    assert len(report["refused"]) == 1  # one clinic in ten demands DP and declines
    paid = sum(report["earnings"].values()) + sum(report["fee_per_node"].values())
    assert paid + report["refund"] == report["budget"] == 1_000 * TOKEN
    assert [p["name"] for p in report["phases"]][-1] == "claims"


@pytest.mark.slow
def test_ensemble_demo_releases_the_plaintext_ensemble_and_pays_by_weight(tmp_path):
    env = {**os.environ, "MARKET_HOME": str(tmp_path)}
    env.pop("MARKET_IPFS_API", None)
    proc = subprocess.run([MARKET, "demo", "--kind", "ensemble", "--json"], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["state"] == "FINALIZED"
    assert report["ensemble"] == report["plain_ensemble"] >= max(report["accuracy"].values())
    assert report["accuracy"][report["best_model"]] == max(report["accuracy"].values())
    assert report["max_probability_error"] < 1e-4
    assert set(report["weights"]) == set(report["accuracy"]) == set(report["earnings"])
    assert sum(report["weights"].values()) == pytest.approx(1.0, abs=1e-3)
    best = max(report["weights"], key=report["weights"].get)
    assert report["earnings"][best] == max(report["earnings"].values())
    paid = sum(report["earnings"].values()) + sum(report["fee_per_node"].values())
    # The pool is paid out in full; only the fee's rounding remainder (its split among the
    # three members that accepted) goes back to the buyer.
    assert report["refund"] < 3 and paid + report["refund"] == report["budget"]
    assert report["evaluation_uri"].startswith("ipfs://")
    assert any((tmp_path / "storage").rglob("*"))  # the evaluation set, content-addressed


def test_demo_table_names_every_party():
    proc = run("demo", "--providers", "4", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "heavy node fee" in proc.stdout and "provider payout" in proc.stdout
    assert "FINALIZED" in proc.stdout


@pytest.mark.anvil
def test_devnet_demo_runs_every_node_as_a_process():
    proc = run("demo", "--devnet", "--providers", "4", "--seed", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["state"] == "FINALIZED"
    assert abs(report["secure_mean"] - report["plain_mean"]) < 1e-4
    assert report["participants"] + len(report["refused"]) == 4
    paid = sum(report["earnings"].values()) + sum(report["fee_per_node"].values())
    assert paid + report["refund"] == report["budget"]


@pytest.mark.slow
def test_bench_valuation_json_shape(tmp_path):
    proc = run(
        "bench", "valuation", "--ks", "32", "--examples", "600", "--utility-buyers", "1", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    row = result["32"]
    for key in ("encrypted_s", "plain_s", "bytes_per_provider", "pearson", "spearman"):
        assert key in row
    assert row["pearson"] >= 0.999 and row["spearman"] >= 0.999
    assert "retrain_spearman" in result
    # The committee's totals, which the payouts follow: the same influence within the
    # encoding's precision, for a fraction of the CKKS path's bytes.
    assert result["committee_s"] == row["committee_s"] > 0 and row["committee_void"] == 0
    assert 0 < result["bytes_per_provider_committee"] < row["bytes_per_provider"] / 10
    assert row["committee_max_abs_error"] < 1e-2
    # Realized utility after last-layer fine-tuning, one buyer of the protocol: 39 sellers.
    assert result["utility_pairs"] == 39
    assert 0.0 < result["utility_spearman"] <= 1.0 and 0.0 < result["utility_pearson"] <= 1.0
    assert result["utility_published"] == {"pearson": 0.959, "spearman": 0.9}
    figure = tmp_path / "influence.png"
    proc = run("valuation", "figure", str(figure), "--k", "32", "--examples", "600")
    assert proc.returncode == 0, proc.stderr
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_ensemble_demo_with_three_holders_prints_the_ensemble_and_each_model(tmp_path):
    env = {**os.environ, "MARKET_HOME": str(tmp_path)}
    env.pop("MARKET_IPFS_API", None)
    proc = subprocess.run([MARKET, "demo", "--kind", "ensemble", "--models", "3"],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "FINALIZED" in out
    for name in ("logistic", "naive_bayes", "decision_tree"):
        assert name in out
    assert "knn" not in out and "mlp" not in out
    assert "ensemble test accuracy 0.9056, best model (logistic) 0.9019: +0.0037" in out
    assert (
        "weights chosen on validation: (accuracy - chance)^16 (0.9147; the best model alone "
        "0.9128, 2 blends evaluated)"
    ) in out


def test_bench_ensemble_is_never_below_its_best_member_for_2_to_6_models():
    """`market bench ensemble --models N` (in process: each family trains once for all N)."""
    from click.testing import CliRunner

    from market.cli.main import main

    runner = CliRunner(mix_stderr=False)
    families = ["logistic", "naive_bayes", "decision_tree", "knn", "random_forest", "mlp"]
    for n in range(2, 7):
        proc = runner.invoke(main, ["bench", "ensemble", "--models", str(n), "--json"])
        assert proc.exit_code == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert list(result["models"]) == families[:n]
        assert result["ensemble"] >= max(result["models"].values()), (n, result)
        assert result["gain_over_best"] >= 0
        candidates = result["candidates"]
        assert candidates[0]["name"] == "best model" and len(candidates) <= n
        assert result["chosen"] == result["plain_chosen"]
        chosen = candidates[result["chosen"]]
        assert chosen["weights"] == result["weights"]
        assert chosen["validation_accuracy"] == max(c["validation_accuracy"] for c in candidates)
        assert chosen["test_accuracy"] == result["ensemble"]
        assert result["chosen"] > 0, n  # on digits a blend beats the best model on validation
        assert sum(result["weights"].values()) == pytest.approx(1.0, abs=1e-4)
    assert runner.invoke(main, ["bench", "ensemble", "--models", "7"]).exit_code == 2


def test_bench_ensemble_json_shape():
    proc = run("bench", "ensemble", "--scheme", "additive", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["models"]) == {
        "logistic", "naive_bayes", "decision_tree", "knn", "random_forest", "mlp"
    }  # fmt: skip
    assert result["ensemble"] == result["plain_ensemble"]
    assert all(0 < acc <= 1 for acc in result["models"].values())


def test_forecast_demo_scores_pays_and_slashes_each_holder(tmp_path):
    """`market demo --kind forecast`: a tournament on the embedded chain; each holder's score,
    payout or slash, ordered by score, the adversarial one slashed within its 20% cap."""
    env = {**os.environ, "MARKET_HOME": str(tmp_path)}
    demo = [MARKET, "demo", "--kind", "forecast", "--targets", "40", "--seed", "2", "--json"]
    proc = subprocess.run(demo, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    holders = {h["name"]: h for h in report["holders"]}
    assert [h["name"] for h in report["holders"]][0] == "skilled" and report["targets"] == 40
    assert holders["skilled"]["payout"] > 0 and holders["skilled"]["slash"] == 0
    assert holders["adversarial"]["payout"] == 0
    assert 0 < holders["adversarial"]["slash"] <= 100 * TOKEN * 2_000 // 10_000
    assert report["burned"] == sum(h["slash"] for h in report["holders"])
    assert "resolution time" in report["refused_early"]
    refused = run("demo", "--kind", "forecast", "--devnet")
    assert refused.returncode == 1 and "drop --devnet" in refused.stderr
