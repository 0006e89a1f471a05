"""The privacy-budget ledger at a light node: jobs on one dataset stop at its budget (the
refusal naming what is left), a per-buyer budget stops one buyer and not another, a job
without DP is refused under a budget, and a crash between spending and sending spends once."""

from __future__ import annotations

import numpy as np
import pytest

from compute.budget import BudgetSpec
from compute.policy import Policy
from compute.proposal import parse_proposal
from market.chain import Chain
from market.demos.statistics import BUDGET, DemoClock, _proposal, clinic_tables, running_committee
from market.sandbox import Sandbox
from nodes.light import LightNode, LightService, LightState, LocalData

TOKEN = 10**18


@pytest.fixture
def market(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKET_HOME", str(tmp_path / "home"))
    with Chain.embedded() as chain:
        market = Sandbox.deploy(chain)
        clock = DemoClock()
        with running_committee(market, tmp_path, clock):
            yield market, clock


def _policy(**budget) -> Policy:
    return Policy.default().model_copy(
        update={"min_participants": 1, "budget": BudgetSpec(**budget)}
    )


def _post(market: Sandbox, buyer, epsilon: float | None, delta: float = 0.0) -> int:
    terms = _proposal(3, market.chain.clock() + 3_600, 1)
    if epsilon is not None:
        terms["privacy"]["dp"] = {"epsilon": epsilon, "delta": delta}
    return market.post_proposal(buyer, parse_proposal(terms)).job_id


def _service(market, clock, owner, path, policy, served) -> LightService:
    return LightService(
        LightNode(owner, market.escrow, market.staking), list(served), policy,
        LightState(str(path)), clock=clock,
    )  # fmt: skip


def _setup(market):
    tables = clinic_tables(np.random.default_rng(5), 1)
    owner = market.account(200 * TOKEN)
    dataset = LocalData(market.dataset(owner, 50 * TOKEN)[1], lambda: tables[0])
    return owner, dataset


def test_jobs_stop_at_the_budget_and_per_buyer_budgets_stop_one_buyer(market, tmp_path):
    market, clock = market
    owner, dataset = _setup(market)
    alice, bob = market.account(4 * BUDGET), market.account(BUDGET)
    name = "0x" + dataset.dataset_id.hex()
    jobs = [_post(market, alice, 1.0), _post(market, alice, 1.0), _post(market, alice, 1.0),
            _post(market, bob, 0.5), _post(market, alice, None)]  # fmt: skip
    policy = _policy(epsilon=3.5, per_buyer={"epsilon": 2.0})
    service = _service(market, clock, owner, tmp_path / "light.db", policy, [dataset])
    decided = {job: (status, reason) for job, _, status, reason in service.poll()}

    assert [decided[j][0] for j in jobs] == [
        "submitted", "submitted", "refused", "submitted", "refused"
    ]  # fmt: skip
    # Alice's third job exceeds her own budget (2 of 2 spent), not the total (2 of 3.5).
    reason = decided[jobs[2]][1]
    assert f"buyer {alice.address}'s privacy budget" in reason
    assert "epsilon 0, delta 0 left of epsilon 2, delta 0" in reason
    assert "this dataset's privacy budget" not in reason
    # Bob is another buyer: his own budget is untouched. A job without DP never fits.
    assert "unbounded" in decided[jobs[4]][1]
    assert "epsilon 1, delta 0 left of epsilon 3.5" in decided[jobs[4]][1]
    spends = service.state.spends(name)
    assert [(s.job, s.epsilon) for s in spends] == [(jobs[0], 1.0), (jobs[1], 1.0), (jobs[3], 0.5)]

    # Spent out: the next job on the dataset is refused whoever asks, naming what is left.
    carol = market.account(BUDGET)
    late = _post(market, carol, 1.5)
    [(job, _, status, reason)] = service.poll()
    assert (job, status) == (late, "refused")
    assert "exceeds this dataset's privacy budget under basic composition" in reason
    assert "epsilon 1, delta 0 left of epsilon 3.5, delta 0" in reason

    # The owner raises the budget: the refusals are decided afresh, and what fits spends.
    raised = _policy(epsilon=10.0, per_buyer={"epsilon": 2.0})
    again = {j: s for j, _, s, _ in _service(market, clock, owner, tmp_path / "light.db",
                                              raised, [dataset]).poll()}  # fmt: skip
    assert again == {jobs[2]: "refused", jobs[4]: "refused", late: "submitted"}


def test_a_crash_between_spending_and_sending_spends_once(market, tmp_path, monkeypatch):
    market, clock = market
    owner, dataset = _setup(market)
    buyer = market.account(BUDGET)
    job = _post(market, buyer, 1.0)
    policy = _policy(epsilon=1.0)  # exactly one job's worth
    path = tmp_path / "light.db"
    crashing = _service(market, clock, owner, path, policy, [dataset])

    def crash(*args, **kwargs):
        raise RuntimeError("power cut before the first share left")

    monkeypatch.setattr(crashing.node, "submit", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        crashing.poll()
    name = "0x" + dataset.dataset_id.hex()
    [spent] = LightState(str(path)).spends(name)  # on disk before any share was sent
    assert (spent.job, spent.epsilon) == (job, 1.0)

    # The restarted node resends the job: already paid for, it fits, and spends nothing more.
    restarted = _service(market, clock, owner, path, policy, [dataset])
    [(_, _, status, _)] = restarted.poll()
    assert status == "submitted"
    assert LightState(str(path)).spends(name) == [spent]
    # The next job finds the budget spent.
    second = _post(market, market.account(BUDGET), 0.5)
    [(j, _, status, reason)] = restarted.poll()
    assert (j, status) == (second, "refused") and "epsilon 0, delta 0 left" in reason
