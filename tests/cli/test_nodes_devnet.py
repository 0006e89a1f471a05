"""A whole job on an Anvil devnet with every node a separate `market` process: three
`market node heavy` services, providers' `market node light` (one left running, which takes
up a dataset staked after it started and logs the payout it can claim), a refusal reconsidered
under a changed policy, a manual approval, the committee's settlement on chain, claims."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from market.chain import TOKEN
from market.demos.devnet import stop_processes
from tests.cli.conftest import MARKET, Cli, heavy_node_processes, wait_for_state


def _wait_for_line(log: Path, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in (content := log.read_text()):
            return content
        time.sleep(0.5)
    raise AssertionError(f"{log.name} never said {text!r}:\n{log.read_text()}")


@pytest.mark.anvil
def test_a_job_settles_with_every_node_its_own_process(devnet_cli: Cli, tmp_path: Path):
    cli = devnet_cli
    for who in ("buyer", "node0", "node1", "node2", "p0", "p1", "p2"):
        cli.ok("wallet", "new", who)
        cli.ok("faucet", "--account", who, "--amount", "2000", net=True)
    light: list[subprocess.Popen] = []
    with heavy_node_processes(cli), contextlib.ExitStack() as stack:
        stack.callback(stop_processes, light)
        values = {"p0": [120, 130, 140], "p1": [110, 150], "p2": [125, 135, 145, 155],
                  "p0b": [100]}  # fmt: skip
        owners = {"p0": "p0", "p1": "p1", "p2": "p2", "p0b": "p0"}
        for name, bp in values.items():
            data = tmp_path / f"{name}.csv"
            data.write_text("bp\n" + "\n".join(str(v) for v in bp) + "\n")
        for who in ("p0", "p1", "p2"):
            cli.ok("dataset", "register", str(tmp_path / f"{who}.csv"), "--name", who)
            cli.ok("dataset", "stake", who, "--amount", "20", "--account", who, net=True)
        log = tmp_path / "p0-light.log"
        with log.open("w") as stderr:
            light.append(subprocess.Popen(
                [MARKET, "node", "light", "--account", "p0", "--interval", "0.5", *cli.network],
                env=cli.env(), stdout=subprocess.DEVNULL, stderr=stderr,
            ))  # fmt: skip
        _wait_for_line(log, "serving p0")
        # Staked while p0's light node runs: it serves this one too from the next job on.
        cli.ok("dataset", "register", str(tmp_path / "p0b.csv"), "--name", "p0b")
        cli.ok("dataset", "stake", "p0b", "--amount", "20", "--account", "p0", net=True)
        policy = tmp_path / "manual.json"
        policy.write_text(json.dumps({"manual_approval": True}))
        strict = tmp_path / "strict.json"
        strict.write_text(json.dumps({"min_participants": 10}))

        spec = tmp_path / "spec.json"
        spec.write_text(cli.ok("bounty", "template", "--column", "bp", "--lo", "0", "--hi", "250"))
        job = cli.json("bounty", "post", str(spec), "--budget", "300", "--deadline", "45s",
                       "--account", "buyer", net=True)["job"]  # fmt: skip

        taken = cli.json("node", "light", "--once", "--account", "p1", net=True)
        assert [t["status"] for t in taken] == ["submitted"]
        # p2 refuses under a strict policy; `node approve` says how to reconsider: another
        # policy, under which the job is decided afresh (here: held for a human's approval).
        taken = cli.json("node", "light", "--once", "--account", "p2", "--policy", str(strict),
                         net=True)  # fmt: skip
        assert [t["status"] for t in taken] == ["refused"]
        line = cli.fails(1, "node", "approve", str(job), "--account", "p2")
        assert "refused" in line and "change the policy" in line
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
        assert result["participants"] == 4
        logged = _wait_for_line(log, "claimable by")
        for line in ("now serving it", f"job {job}: open", "submitted"):
            assert line in logged, logged
        stop_processes(light)

        fee = 300 * TOKEN * 1_000 // 10_000
        share = (300 * TOKEN - fee) // 4
        for who in ("p0", "p1", "p2"):
            claimed = cli.json("claim", "--account", who, net=True)
            datasets = sum(1 for owner in owners.values() if owner == who)
            assert claimed["claimed"][0]["amount"] == datasets * share
        earned = [
            cli.json("heavy", "status", "--account", f"node{i}", net=True)["fees_earned"]
            for i in range(3)
        ]
        assert sum(earned) == fee
