"""A light node left running: it serves datasets staked after it started, decides afresh a
job its policy refused once the policy changed, and follows each submitted job to its end on
chain, logging what its owner can claim."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from compute.policy import Policy
from compute.proposal import parse_proposal
from market.chain import Chain
from market.demos.statistics import BUDGET, DemoClock, _proposal, clinic_tables, running_committee
from market.escrow import JobState
from market.sandbox import Sandbox
from nodes.light import LightNode, LightService, LightState, LocalData

TOKEN = 10**18


@pytest.fixture
def market(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKET_HOME", str(tmp_path / "home"))  # where proposals are published
    with Chain.embedded() as chain:
        market = Sandbox.deploy(chain)
        clock = DemoClock()
        with running_committee(market, tmp_path, clock):
            yield market, clock


def _service(market: Sandbox, clock, owner, tmp_path, policy: Policy, served) -> LightService:
    return LightService(
        LightNode(owner, market.escrow, market.staking),
        list(served[:1]),  # what was staked when it started
        policy,
        LightState(str(tmp_path / "light.db")),  # the same database across restarts
        clock=clock,
        refresh=lambda: list(served),
        refresh_every=0.0,
    )


def test_a_running_light_node_picks_up_new_datasets_reconsiders_and_reports_payouts(
    market, tmp_path, caplog
):
    market, clock = market
    tables = clinic_tables(np.random.default_rng(3), 2)
    owner = market.account(200 * TOKEN)
    served = [LocalData(market.dataset(owner, 50 * TOKEN)[1], lambda: tables[0])]
    buyer = market.account(BUDGET)
    terms = _proposal(3, market.chain.clock() + 3_600, 1)
    view = market.post_proposal(buyer, parse_proposal(terms))

    caplog.set_level(logging.INFO, logger="market.light")
    strict = _service(market, clock, owner, tmp_path, Policy.default(), served)
    [(job, _, status, reason)] = strict.poll()
    assert (job, status) == (view.job_id, "refused") and "at least 3" in reason
    assert strict.poll() == []  # decided: not asked again under the same policy

    # Staked after the node started: served from its next pass on.
    served.append(LocalData(market.dataset(owner, 50 * TOKEN)[1], lambda: tables[1]))
    [(job, second, status, _)] = strict.poll()
    assert status == "refused" and second == "0x" + served[1].dataset_id.hex()
    assert "now serving it" in caplog.text

    # The operator loosens the policy and restarts the node: the refusals are decided afresh.
    loose = Policy.default().model_copy(update={"min_participants": 1})
    restarted = _service(market, clock, owner, tmp_path, loose, served)
    decisions = restarted.poll()
    assert [status for _, _, status, _ in decisions] == ["submitted", "submitted"]
    assert "refused under another policy" in caplog.text
    assert restarted.poll() == []

    clock.offset = view.deadline - time.time() + 1
    deadline = time.monotonic() + 60
    while market.escrow.job_state(view.job_id) is JobState.POSTED:
        assert time.monotonic() < deadline, "the committee did not settle"
        time.sleep(0.2)
    caplog.clear()
    restarted.poll()
    assert f"claimable by {owner.address}" in caplog.text
    states = {status for _, _, status, _ in restarted.state.all()}
    assert states == {"settled"}
    caplog.clear()
    restarted.poll()
    assert "claimable" not in caplog.text  # said once
