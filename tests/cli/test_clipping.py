"""A job whose providers hold values outside the proposal's bounds: the committee's result
document says how many were clipped (the total, counted under sharing), and so does `market
bounty result`. The heavy nodes run in this process on the embedded chain that the `market`
command then reads from `$MARKET_HOME`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import requests

from compute.maps import run_map
from compute.proposal import parse_proposal
from market.chain import TOKEN, Chain
from market.escrow import JobState
from market.escrow.documents import ResultDocument
from market.home import Home
from market.network import Network
from market.sandbox import Sandbox
from nodes.jobs import JobSpecs
from tests.cli.conftest import Cli
from tests.nodes.harness import Committee


def test_bounty_result_reports_how_many_values_were_clipped(tmp_path: Path, monkeypatch):
    home = Home(tmp_path / "home")
    monkeypatch.setenv("MARKET_HOME", str(home.root))  # the proposal's content store
    monkeypatch.delenv("MARKET_IPFS_API", raising=False)
    # Blood pressures as the README's old sample data made them (1%d0 with $RANDOM), beside
    # ones inside [0, 250], and a negative typo.
    tables = [
        pd.DataFrame({"bp": [120.0, 136870.0, 131.0, 128.0]}),
        pd.DataFrame({"bp": [119.0, 1270.0, 125.0, -5.0, 140.0]}),
        pd.DataFrame({"bp": [110.0, 115.0, 150.0]}),
    ]
    outside = 3
    chain = Chain.embedded(home.embedded_state)
    with chain:
        market = Sandbox.deploy(chain)
        Network("embedded", chain, home, home.networks / "embedded.json").save_deployment(
            market.deployment
        )
        committee = Committee(market, tmp_path, config_for=JobSpecs(market.escrow))
        committee.start(3)
        try:
            buyer = market.account(1_000 * TOKEN)
            proposal = parse_proposal(
                {
                    "version": 1,
                    "kind": "aggregate",
                    "title": "Mean blood pressure",
                    "map": {
                        "function": "column_values",
                        "output": {"fields": [{"name": "bp", "lo": 0, "hi": 250}]},
                    },
                    "reduce": {"op": "mean", "scheme": "shamir", "threat_model": "semi-honest"},
                    "privacy": {"min_participants": 3},
                    "economics": {"budget": 300 * TOKEN, "fee_bps": 1_000,
                                  "payout_rule": "equal"},
                    "deadline": chain.now() + 3_600,
                    "committee_size": 3,
                    "quorum": 2,
                }
            )  # fmt: skip
            view = market.post_proposal(buyer, proposal)
            config = committee.config_for(view)
            assert config.reduction.count_clipped
            for table in tables:
                owner, dataset_id = market.dataset()
                records, report = run_map(proposal, table)
                delivery = committee.light(owner).submit(view, config, dataset_id, records)
                assert delivery.accepted == [1, 2, 3]
            assert sum(run_map(proposal, t).report.values_clipped for t in tables) == outside

            committee.clock.advance(view.deadline - committee.clock() + 1)
            assert committee.wait_for(view.job_id) is JobState.FINALIZED
            for account in committee.accounts:  # each member serves it from now on
                endpoint = market.staking.heavy_node(account.address).endpoint
                raw = requests.get(f"{endpoint}/jobs/{view.job_id}/result", timeout=10).content
                document = ResultDocument.from_bytes(
                    raw, market.escrow.job(view.job_id).result_hash
                )
            for node in committee.nodes.values():  # leave the chain to the `market` command
                node.stop()
        except BaseException:
            committee.stop()
            raise
    try:
        assert document.result["clipped"] == outside
        assert document.result["clip_bounds"] == {"lo": 0.0, "hi": 250.0}
        everything = np.clip(np.concatenate([t["bp"].to_numpy() for t in tables]), 0, 250)
        assert abs(document.result["values"][0] - everything.mean()) < 1e-4
        assert document.result["count"] == len(everything)

        cli = Cli(home.root, ["--network", "embedded"])
        shown = cli.json("bounty", "result", str(view.job_id), net=True)
        assert shown["clipped"] == outside
        assert shown["result"]["clipped"] == outside
        assert shown["result"]["count"] == len(everything)  # the keys scripts read are kept
        text = cli.ok("bounty", "result", str(view.job_id), net=True)
        assert "3 values outside [0, 250] were clipped" in text
    finally:
        committee.stop()
