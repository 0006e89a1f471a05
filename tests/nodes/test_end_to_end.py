"""A PMSR job from bounty to claims through the real node code over HTTP on loopback."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from market.chain import Chain
from market.escrow import JobState
from market.escrow.documents import ResultDocument
from market.sandbox import Sandbox
from tests.nodes.harness import FIELD, Committee, clinic_data


@pytest.fixture
def committee(tmp_path):
    with Chain.embedded() as chain:
        c = Committee(Sandbox.deploy(chain), tmp_path)
        c.start(3)
        try:
            yield c
        finally:
            c.stop()


def test_job_finalizes_and_everyone_is_paid(committee: Committee):
    market = committee.market
    buyer = market.account(10_000 * 10**18)
    providers = [market.dataset() for _ in range(5)]
    data = clinic_data(np.random.default_rng(1), len(providers))
    job_id = committee.post(buyer, min_participants=3)
    view = market.escrow.job(job_id)
    config = committee.config_for(view)
    for (owner, dataset_id), values in zip(providers, data, strict=True):
        delivery = committee.light(owner).submit(view, config, dataset_id, values)
        assert delivery.accepted == [1, 2, 3]

    before = market.token.balance_of(buyer.address)
    committee.clock.advance(view.deadline - committee.clock() + 1)
    assert committee.wait_for(job_id) is JobState.FINALIZED

    endpoint = market.staking.heavy_node(committee.accounts[1].address).endpoint
    raw = requests.get(f"{endpoint}/jobs/{job_id}/result", timeout=10).content
    document = ResultDocument.from_bytes(raw, market.escrow.job(job_id).result_hash)
    plain = np.concatenate([np.clip(d, FIELD.lo, FIELD.hi) for d in data]).mean()
    assert document.result["values"][0] == pytest.approx(plain, abs=1e-4)
    assert document.result["count"] == sum(len(d) for d in data)

    tree = document.payouts
    assert tree is not None and len(tree) == 5
    market.claim_all(job_id, tree)
    for owner, _ in providers:
        assert market.token.balance_of(owner.address) == tree.amount(owner.address)
    fee = view.budget * view.fee_bps // 10_000
    assert tree.total == view.budget - fee
    # The pool is paid out in full; the fee's rounding remainder (its split among the three
    # accepted members) goes back to the buyer.
    assert market.token.balance_of(buyer.address) == before + fee % 3
    market.assert_accounting()


def _post_and_submit(committee: Committee, providers: int, min_participants: int = 3, submit=None):
    market = committee.market
    buyer = market.account(10_000 * 10**18)
    datasets = [market.dataset() for _ in range(providers)]
    data = clinic_data(np.random.default_rng(2), providers)
    job_id = committee.post(buyer, min_participants=min_participants)
    view = market.escrow.job(job_id)
    config = committee.config_for(view)
    chosen = datasets if submit is None else datasets[:submit]
    for (owner, dataset_id), values in zip(chosen, data, strict=False):
        committee.light(owner).submit(view, config, dataset_id, values)
    return buyer, datasets, data, view


def _past_deadline(committee: Committee, view) -> None:
    committee.clock.advance(view.deadline - committee.clock() + 1)


def test_a_heavy_node_killed_mid_job_and_shamir_still_finalizes(committee: Committee):
    buyer, datasets, data, view = _post_and_submit(committee, 4)
    victim = committee.accounts[2]
    committee.kill(victim)
    _past_deadline(committee, view)
    assert committee.wait_for(view.job_id) is JobState.FINALIZED
    market = committee.market
    # The two live members signed and were paid; the dead one earned nothing.
    assert market.staking.heavy_node(victim.address).fees_earned == 0
    assert all(market.staking.heavy_node(a.address).fees_earned > 0 for a in committee.accounts[:2])


def test_a_restarted_heavy_node_loses_no_submission(committee: Committee):
    buyer, datasets, data, view = _post_and_submit(committee, 4)
    committee.restart(committee.accounts[1])
    status = requests.get(
        committee.market.staking.heavy_node(committee.accounts[1].address).endpoint
        + f"/jobs/{view.job_id}",
        timeout=10,
    ).json()
    assert status["submissions"] == 4
    _past_deadline(committee, view)
    assert committee.wait_for(view.job_id) is JobState.FINALIZED
    endpoint = committee.market.staking.heavy_node(committee.accounts[1].address).endpoint
    raw = requests.get(f"{endpoint}/jobs/{view.job_id}/result", timeout=10).content
    assert len(ResultDocument.from_bytes(raw).result["participants"]) == 4


def test_too_few_providers_abort_with_a_full_refund(committee: Committee):
    market = committee.market
    buyer, datasets, data, view = _post_and_submit(committee, 4, min_participants=4, submit=3)
    before = market.token.balance_of(buyer.address)
    _past_deadline(committee, view)
    assert committee.wait_for(view.job_id) is JobState.ABORTED
    assert market.token.balance_of(buyer.address) == before + view.budget
    market.assert_accounting()


def test_a_job_nobody_settles_expires_and_refunds(committee: Committee):
    market = committee.market
    buyer, datasets, data, view = _post_and_submit(committee, 3)
    for account in list(committee.accounts):
        committee.kill(account)
    before = market.token.balance_of(buyer.address)
    market.chain.increase_time(
        view.deadline - market.chain.now() + market.config.settlement_grace + 2
    )
    market.escrow.expire(market.deployer, view.job_id)
    assert market.escrow.job_state(view.job_id) is JobState.EXPIRED
    assert market.token.balance_of(buyer.address) == before + view.budget
    penalty = market.config.liveness_penalty
    for account in committee.accounts:
        record = market.staking.heavy_node(account.address)
        assert record.stake == market.config.min_heavy_node_stake - penalty


def test_differential_privacy_noise_from_every_member_and_epsilon_reported(tmp_path):
    from dataclasses import replace

    from compute.dp import PrivacyTerms, plan_noise
    from tests.nodes.harness import mean_config

    def dp_config(view):
        config = mean_config(view)
        return replace(config, privacy=plan_noise(config.reduction, PrivacyTerms(2.0)))

    with Chain.embedded() as chain:
        c = Committee(Sandbox.deploy(chain), tmp_path, config_for=dp_config)
        c.start(3)
        try:
            market = c.market
            buyer = market.account(10_000 * 10**18)
            providers = [market.dataset() for _ in range(4)]
            data = clinic_data(np.random.default_rng(4), 4)
            job_id = c.post(buyer, min_participants=3)
            view = market.escrow.job(job_id)
            config = c.config_for(view)
            for (owner, dataset_id), values in zip(providers, data, strict=True):
                c.light(owner).submit(view, config, dataset_id, values)
            c.restart(c.accounts[0])  # its noise is kept: the replay sends the same shares
            c.clock.advance(view.deadline - c.clock() + 1)
            assert c.wait_for(job_id) is JobState.FINALIZED
            endpoint = market.staking.heavy_node(c.accounts[0].address).endpoint
            document = ResultDocument.from_bytes(
                requests.get(f"{endpoint}/jobs/{job_id}/result", timeout=10).content
            )
        finally:
            c.stop()
    assert document.result["privacy"]["epsilon"] > 0
    # Published spend: what each provider's ledger charged, the mechanism and its noise scale.
    published = document.result["privacy"]
    assert published["budget_spent"] == {"epsilon": published["epsilon"], "delta": 0.0}
    assert published["mechanism"] == "laplace" and published["noise_shares"] >= 2
    assert all(g["scale"] > 0 and g["sensitivity"] > 0 for g in published["noise"])
    plain = np.concatenate([np.clip(d, FIELD.lo, FIELD.hi) for d in data]).mean()
    assert document.result["values"][0] != plain  # noised ...
    assert abs(document.result["values"][0] - plain) < 20  # ... but still a mean of the data


def test_stakes_changed_since_the_nodes_last_looked_are_seen(committee: Committee):
    """The heavy nodes answer stake checks from a view kept from the chain's events: a dataset
    that started unbonding, or was slashed below the minimum, after the view last synced is
    refused in a job posted after that; one staked after it is taken."""
    from market.escrow import Slash
    from nodes.light import SubmissionRefused

    market = committee.market
    buyer = market.account(10_000 * 10**18)
    (unbonding, a), (slashed, b), (kept, c) = (market.dataset() for _ in range(3))
    for node in committee.nodes.values():
        node.stakes.sync()
    market.staking.request_dataset_unstake(unbonding, a)
    earlier = committee.post(buyer)
    result, _ = market.result(earlier, {}, participants=1, slashes=[Slash(b, 10**18)], funded=0)
    consent = market.consent(slashed, earlier, b, 2_000)
    market.escrow.finalize(buyer, result, market.sign(committee.accounts, result), [consent])

    job_id = committee.post(buyer, min_participants=1)
    late, d = market.dataset()  # staked after every node's last sync
    view = market.escrow.job(job_id)
    config = committee.config_for(view)
    with pytest.raises(SubmissionRefused, match="unbonding when the job was posted"):
        committee.light(unbonding).submit(view, config, a, [120.0])
    with pytest.raises(SubmissionRefused, match="slashed below the market's minimum"):
        committee.light(slashed).submit(view, config, b, [120.0])
    for owner, dataset_id in ((kept, c), (late, d)):
        assert committee.light(owner).submit(view, config, dataset_id, [120.0]).accepted == [
            1,
            2,
            3,
        ]
