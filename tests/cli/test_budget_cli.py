"""`market dataset budget ID`: the total from the light node's policy, what its ledger says the
jobs spent, what is left, and who spent it, through the installed entry point."""

from __future__ import annotations

import json
from pathlib import Path

from compute.budget import Spend
from nodes.light import LightState
from tests.cli.conftest import Cli

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


def test_dataset_budget_shows_total_spent_remaining_and_the_jobs(embedded_cli: Cli, tmp_path: Path):
    data = tmp_path / "clinic.csv"
    data.write_text("age,bp\n34,120\n51,135\n47,128\n")
    registered = embedded_cli.json("dataset", "register", str(data), "--name", "p0")
    name = registered["dataset"] if "dataset" in registered else registered["id"]
    # What `market node light --account p0` wrote while serving three DP jobs.
    ledger = embedded_cli.home / "light"
    ledger.mkdir(parents=True, exist_ok=True)
    state = LightState(str(ledger / "p0.db"))
    state.spend(name, Spend(1, ALICE, 1.0, 0.0, at=1_700_000_000))
    state.spend(name, Spend(2, ALICE, 0.5, 1e-7, at=1_700_000_100))
    state.spend(name, Spend(3, BOB, 0.25, 0.0, at=1_700_000_200))
    assert not state.spend(name, Spend(3, BOB, 0.25, 0.0, at=1_700_000_300))  # once per job
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {"budget": {"epsilon": 4, "delta": 1e-6, "per_buyer": {"epsilon": 2, "delta": 1e-6}}}
        )
    )

    report = embedded_cli.json("dataset", "budget", "p0", "--account", "p0",
                               "--policy", str(policy))  # fmt: skip
    assert report["total"] == {"epsilon": 4.0, "delta": 1e-6}
    assert report["spent"]["epsilon"] == 1.75 and report["spent"]["delta"] == 1e-7
    assert report["remaining"]["epsilon"] == 2.25
    assert report["rule"] == "basic: basic"
    assert [(j["job"], j["buyer"], j["epsilon"]) for j in report["jobs"]] == [
        (1, ALICE, 1.0), (2, ALICE, 0.5), (3, BOB, 0.25)
    ]  # fmt: skip
    assert report["per_buyer"][ALICE]["remaining"]["epsilon"] == 0.5
    assert report["per_buyer"][BOB]["remaining"]["epsilon"] == 1.75

    shown = embedded_cli.ok("dataset", "budget", name, "--policy", str(policy))  # id, all ledgers
    assert "epsilon 2.25, delta 9e-07" in shown and "epsilon 1.75" in shown
    assert ALICE in shown and "2023-11-14" in shown
    unlimited = embedded_cli.ok("dataset", "budget", "p0")
    assert "unlimited" in unlimited and "no budget set" in unlimited

    bad = tmp_path / "bad.json"
    bad.write_text('{"budget": {"epsilon": -1}}')
    assert "budget.epsilon" in embedded_cli.fails(
        1, "dataset", "budget", "p0", "--policy", str(bad)
    )
    assert "no registered dataset" in embedded_cli.fails(1, "dataset", "budget", "nope")
