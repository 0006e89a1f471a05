"""claim: one payment per leaf, proofs checked, pool bounded; the view helpers around it."""

from __future__ import annotations

import pytest

from market.chain import TOKEN
from market.chain import errors as E
from market.valuation.merkle import leaf_hash
from tests.contracts.world import World


@pytest.fixture
def settled(world: World):
    committee = world.heavy_nodes(3)
    buyer = world.account(1_000 * TOKEN)
    job_id = world.post(buyer, committee, budget=1_000 * TOKEN)
    providers = [world.account() for _ in range(7)]
    payouts = {p.address: 10 * TOKEN + i for i, p in enumerate(providers)}
    result, tree = world.result(job_id, payouts)
    world.escrow.finalize(buyer, result, world.sign(committee, result))
    return job_id, tree, payouts


def test_anyone_claims_for_anyone_and_tokens_go_to_the_account(world: World, settled):
    job_id, tree, payouts = settled
    relayer = world.account()
    account, amount = next(iter(payouts.items()))
    receipt = world.escrow.claim(relayer, job_id, account, amount, tree.proof(account))
    assert world.token.balance_of(account) == amount
    assert world.token.balance_of(relayer.address) == 0
    (event,) = receipt.events(world.escrow.contract, "PayoutClaimed")
    assert event == {"jobId": job_id, "account": account, "amount": amount}


def test_a_leaf_is_claimed_once(world: World, settled):
    job_id, tree, payouts = settled
    account, amount = next(iter(payouts.items()))
    world.escrow.claim(world.deployer, job_id, account, amount, tree.proof(account))
    with pytest.raises(E.MarketplaceAlreadyClaimed):
        world.escrow.claim(world.deployer, job_id, account, amount, tree.proof(account))
    assert world.token.balance_of(account) == amount


def test_wrong_amount_or_proof_is_refused(world: World, settled):
    job_id, tree, payouts = settled
    (a, amount_a), (b, _) = list(payouts.items())[:2]
    with pytest.raises(E.MarketplaceInvalidProof):
        world.escrow.claim(world.deployer, job_id, a, amount_a + 1, tree.proof(a))
    with pytest.raises(E.MarketplaceInvalidProof):
        world.escrow.claim(world.deployer, job_id, a, amount_a, tree.proof(b))
    with pytest.raises(E.MarketplaceInvalidProof):
        world.escrow.claim(world.deployer, job_id, b, amount_a, tree.proof(a))


def test_claim_on_a_job_that_is_not_finalized(world: World):
    committee = world.heavy_nodes(1)
    buyer = world.account(10 * TOKEN)
    job_id = world.post(buyer, committee, budget=10 * TOKEN, max_slash_bps=0)
    with pytest.raises(E.MarketplaceJobNotFinalized):
        world.escrow.claim(buyer, job_id, buyer.address, 1, [])
    with pytest.raises(E.MarketplaceJobNotFinalized):
        world.escrow.claim(buyer, 404, buyer.address, 1, [])


def test_a_tree_larger_than_its_pool_cannot_drain_other_escrow(world: World):
    committee = world.heavy_nodes(1)
    buyer = world.account(200 * TOKEN)
    other_job = world.post(buyer, committee, budget=100 * TOKEN, max_slash_bps=0, fee_bps=0)
    job_id = world.post(buyer, committee, budget=100 * TOKEN, max_slash_bps=0, fee_bps=0)
    a, b = world.account(), world.account()
    # A misbehaving committee signs a tree worth 160 while funding only 100.
    result, tree = world.result(
        job_id, {a.address: 80 * TOKEN, b.address: 80 * TOKEN}, funded=100 * TOKEN
    )
    world.escrow.finalize(buyer, result, world.sign(committee, result))
    world.escrow.claim(a, job_id, a.address, 80 * TOKEN, tree.proof(a.address))
    with pytest.raises(E.MarketplacePayoutPoolExhausted):
        world.escrow.claim(b, job_id, b.address, 80 * TOKEN, tree.proof(b.address))
    assert world.escrow.job(other_job).budget == 100 * TOKEN
    world.assert_accounting()


def test_views_mirror_python(world: World, settled):
    job_id, tree, payouts = settled
    account, amount = next(iter(payouts.items()))
    assert world.escrow.payout_leaf(account, amount) == leaf_hash(account, amount)
    assert not world.escrow.is_claimed(job_id, account, amount)
    cfg = world.chain.call(world.escrow.contract.functions.config())
    assert tuple(cfg) == world.config.as_tuple()
    assert world.chain.call(world.escrow.contract.functions.token()) == world.deployment.token
