"""A whole job on an Anvil devnet with every node a separate `market` process: three
`market node heavy` services, providers' `market node light`, a manual approval, the
committee's settlement on chain, claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from market.chain import TOKEN
from tests.cli.conftest import Cli, heavy_node_processes, wait_for_state


@pytest.mark.anvil
def test_a_job_settles_with_every_node_its_own_process(devnet_cli: Cli, tmp_path: Path):
    cli = devnet_cli
    for who in ("buyer", "node0", "node1", "node2", "p0", "p1", "p2"):
        cli.ok("wallet", "new", who)
        cli.ok("faucet", "--account", who, "--amount", "2000", net=True)
    with heavy_node_processes(cli):
        values = {"p0": [120, 130, 140], "p1": [110, 150], "p2": [125, 135, 145, 155]}
        for who, bp in values.items():
            data = tmp_path / f"{who}.csv"
            data.write_text("bp\n" + "\n".join(str(v) for v in bp) + "\n")
            cli.ok("dataset", "register", str(data), "--name", who)
            cli.ok("dataset", "stake", who, "--amount", "20", "--account", who, net=True)
        policy = tmp_path / "manual.json"
        policy.write_text(json.dumps({"manual_approval": True}))

        spec = tmp_path / "spec.json"
        spec.write_text(cli.ok("bounty", "template", "--column", "bp", "--lo", "0", "--hi", "250"))
        job = cli.json("bounty", "post", str(spec), "--budget", "300", "--deadline", "45s",
                       "--account", "buyer", net=True)["job"]  # fmt: skip

        for who in ("p0", "p1"):
            taken = cli.json("node", "light", "--once", "--account", who, net=True)
            assert [t["status"] for t in taken] == ["submitted"]
        # p2's policy wants a human to approve each job.
        taken = cli.json("node", "light", "--once", "--account", "p2", "--policy", str(policy),
                         net=True)  # fmt: skip
        assert [t["status"] for t in taken] == ["awaiting approval"]
        assert cli.json("node", "approvals", "--account", "p2") == [
            {"job": job, "dataset": taken[0]["dataset"]}
        ]
        cli.ok("node", "approve", str(job), "--account", "p2")
        taken = cli.json("node", "light", "--once", "--account", "p2", "--policy", str(policy),
                         net=True)  # fmt: skip
        assert [t["status"] for t in taken] == ["submitted"]

        wait_for_state(cli, job, "FINALIZED", 120.0)
        result = cli.json("bounty", "result", str(job), net=True)
        everything = [v for bp in values.values() for v in bp]
        assert result["result"]["values"][0] == pytest.approx(sum(everything) / len(everything))
        assert result["result"]["count"] == len(everything)
        assert result["participants"] == 3

        fee = 300 * TOKEN * 1_000 // 10_000
        for who in values:
            claimed = cli.json("claim", "--account", who, net=True)
            assert claimed["claimed"][0]["amount"] == (300 * TOKEN - fee) // 3
        earned = [
            cli.json("heavy", "status", "--account", f"node{i}", net=True)["fees_earned"]
            for i in range(3)
        ]
        assert sum(earned) == fee
