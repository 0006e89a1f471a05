"""drawCommittee, acceptJob, committeeReady, heavyNodeRegistry, claimFee, releaseFees and the
unstaffed expiry: behaviour and every revert. (Attacks on them are in test_adversaries.py.)"""

from __future__ import annotations

import pytest

from market.chain import TOKEN
from market.chain import errors as E
from market.escrow import JobState
from market.escrow.eip712 import sign_digest
from tests.contracts.draw import block_hash, draw, expected_committee, seed_of
from tests.contracts.world import World, call_at, fee_split, mine_blocks, same_block


@pytest.fixture
def buyer(world: World):
    return world.account(10_000 * TOKEN)


# ---------------------------------------------------------------------------------- draw
def test_draw_takes_distinct_registered_nodes_as_the_seed_says(world: World, buyer):
    nodes = world.heavy_nodes(6)
    pool = world.escrow.registry()
    assert sorted(pool) == sorted(n.address for n in nodes)
    job_id = world.escrow.post_job(buyer, world.params(4))
    expected = expected_committee(world, job_id, pool)
    receipt = world.escrow.draw_committee(world.account(), job_id)  # anyone may draw
    job = world.escrow.job(job_id)
    assert job.committee == expected
    assert len(set(job.committee)) == 4 and set(job.committee) <= set(pool)
    assert list(job.committee) == sorted(job.committee, key=lambda a: int(a, 16))
    (event,) = receipt.events(world.escrow.contract, "CommitteeDrawn")
    assert tuple(event["committee"]) == job.committee and event["acceptBy"] == job.accept_by
    with pytest.raises(E.MarketplaceCommitteeAlreadyDrawn):
        world.escrow.draw_committee(world.deployer, job_id)


def test_draw_reverts(world: World, buyer):
    world.heavy_nodes(3)
    with pytest.raises(E.MarketplaceJobNotFound):
        world.escrow.draw_committee(world.deployer, 7)
    world.token.approve(buyer, world.market, 10**30)
    fns = world.escrow.contract.functions
    post, early = same_block(
        world.chain,
        [(buyer, fns.postJob(world.params(3).as_abi())), (world.deployer, fns.drawCommittee(1))],
    )
    assert (post["status"], early["status"]) == (1, 0)
    assert post["blockNumber"] == early["blockNumber"]
    with pytest.raises(E.MarketplaceDrawTooEarly) as info:  # the failed draw, replayed there
        call_at(world.chain, fns.drawCommittee(1), world.deployer.address, post["blockNumber"])
    assert info.value.values["fromBlock"] == post["blockNumber"] + 1
    world.chain.increase_time(world.config.accept_window + 1)
    with pytest.raises(E.MarketplaceAcceptWindowClosed):
        world.escrow.draw_committee(world.deployer, 1)
    world.escrow.expire(world.deployer, 1)
    with pytest.raises(E.MarketplaceJobNotPosted):
        world.escrow.draw_committee(world.deployer, 1)


def test_draw_moves_on_when_the_block_hash_is_gone(world: World, buyer):
    world.heavy_nodes(4)
    pool = world.escrow.registry()
    job_id = world.escrow.post_job(buyer, world.params(3))
    posted_in = world.escrow.job(job_id).draw_block
    mine_blocks(world.chain, 257)  # blockhash(drawBlock) is now 0
    receipt = world.escrow.draw_committee(world.deployer, job_id)
    (event,) = receipt.events(world.escrow.contract, "CommitteeDrawDeferred")
    job = world.escrow.job(job_id)
    assert event["drawBlock"] == job.draw_block == receipt.block_number > posted_in
    assert job.committee == ()
    world.escrow.draw_committee(world.deployer, job_id)
    seed = seed_of(block_hash(world, receipt.block_number), job_id)
    assert world.escrow.job(job_id).committee == draw(seed, pool, 3, buyer.address)


def test_a_node_that_left_in_the_posting_block_is_not_drawn(world: World, buyer):
    """The draw takes the registry as it stands at the end of the posting block."""
    nodes = world.heavy_nodes(3)
    world.token.approve(buyer, world.market, 10**30)
    fns = world.escrow.contract.functions
    post, leave = same_block(
        world.chain,
        [(buyer, fns.postJob(world.params(3).as_abi())), (nodes[0], fns.requestHeavyNodeUnstake())],
    )
    assert post["status"] == leave["status"] == 1
    with pytest.raises(E.MarketplaceNotEnoughHeavyNodes):
        world.escrow.draw_committee(world.deployer, 1)
    world.chain.increase_time(world.config.accept_window + 1)
    world.escrow.expire(world.deployer, 1)
    assert world.token.balance_of(buyer.address) == 10_000 * TOKEN


def test_registry_holds_exactly_the_active_nodes(world: World, buyer):
    nodes = world.heavy_nodes(4)
    assert len(world.escrow.registry()) == 4
    world.staking.request_heavy_node_unstake(nodes[0])
    assert set(world.escrow.registry()) == {n.address for n in nodes[1:]}
    # A liveness penalty below the minimum stake takes a node out; a top-up brings it back.
    job_id = world.post(buyer, nodes[1:], window=50)
    world.chain.increase_time(50 + world.config.settlement_grace + 1)
    world.escrow.expire(world.deployer, job_id)
    assert world.escrow.registry() == ()
    for node in nodes[1:]:
        assert not world.staking.is_active_heavy_node(node.address)
    world.token.transfer(world.deployer, nodes[1].address, world.config.liveness_penalty)
    world.staking.top_up_heavy_node(nodes[1], world.config.liveness_penalty)
    assert world.escrow.registry() == (nodes[1].address,)
    with pytest.raises(E.MarketplaceNotEnoughHeavyNodes):
        world.escrow.post_job(buyer, world.params(2, max_slash_bps=0))
    world.post(buyer, nodes[1:2], max_slash_bps=0)


# ---------------------------------------------------------------------------------- accept
def test_accept_and_ready(world: World, buyer):
    nodes = world.heavy_nodes(3)
    job_id = world.escrow.post_job(buyer, world.params(3))
    with pytest.raises(E.MarketplaceSignerNotInCommittee):  # nothing drawn yet
        world.escrow.accept_job(nodes[0], job_id)
    world.draw(job_id)
    outsider = world.heavy_nodes(1)[0]
    with pytest.raises(E.MarketplaceSignerNotInCommittee):
        world.escrow.accept_job(outsider, job_id)
    a, b, c = nodes
    receipt = world.escrow.accept_job(b, job_id)
    (event,) = receipt.events(world.escrow.contract, "JobAccepted")
    assert event == {"jobId": job_id, "node": b.address}
    with pytest.raises(E.MarketplaceAlreadyAccepted):
        world.escrow.accept_job(b, job_id)
    assert not world.escrow.committee_ready(job_id)  # below quorum
    world.escrow.accept_job(a, job_id)
    job = world.escrow.job(job_id)
    assert job.accepted == (a.address, b.address) and job.accepted_mask == 0b011
    # A quorum accepted, but c may still accept until acceptBy: light nodes wait.
    assert not world.escrow.committee_ready(job_id) and not job.ready(world.chain.now())
    world.chain.increase_time(world.config.accept_window + 1)
    assert world.escrow.committee_ready(job_id) and job.ready(world.chain.now())
    with pytest.raises(E.MarketplaceAcceptWindowClosed):
        world.escrow.accept_job(c, job_id)


def test_ready_as_soon_as_every_member_accepted(world: World, buyer):
    nodes = world.heavy_nodes(3)
    job_id = world.post(buyer, nodes)
    assert world.escrow.committee_ready(job_id)
    assert world.escrow.job(job_id).ready(world.chain.now())
    world.escrow.abort(nodes[0], job_id, "x", world.sign_abort(nodes[:2], job_id, "x"))
    assert not world.escrow.committee_ready(job_id)
    with pytest.raises(E.MarketplaceJobNotPosted):
        world.escrow.accept_job(nodes[2], job_id)


def test_only_accepted_members_sign(world: World, buyer):
    nodes = world.heavy_nodes(3)
    a, b, c = nodes
    job_id = world.post(buyer, nodes, accept=[a, b])
    result, _ = world.result(job_id, {})
    with pytest.raises(E.MarketplaceSignerNotAccepted) as info:
        world.escrow.finalize(buyer, result, world.sign([a, c], result))
    assert info.value.values["signer"] == c.address
    with pytest.raises(E.MarketplaceSignerNotAccepted):
        world.escrow.abort(buyer, job_id, "x", world.sign_abort([b, c], job_id, "x"))
    world.escrow.finalize(buyer, result, world.sign([a, b], result))


# ---------------------------------------------------------------------------------- expire
def test_a_job_whose_quorum_did_not_accept_expires_at_accept_by_without_penalties(
    world: World, buyer
):
    nodes = world.heavy_nodes(3)
    job_id = world.post(buyer, nodes, accept=nodes[:1])
    job = world.escrow.job(job_id)
    with pytest.raises(E.MarketplaceJobNotExpired) as info:
        world.escrow.expire(buyer, job_id)
    assert info.value.values["expiresAt"] == job.accept_by + 1
    stakes = [world.staking.heavy_node(n.address).stake for n in nodes]
    world.chain.increase_time(job.accept_by - world.chain.now() + 1)
    receipt = world.escrow.expire(world.account(), job_id)
    assert receipt.events(world.escrow.contract, "HeavyNodePenalized") == []
    assert world.escrow.job_state(job_id) is JobState.EXPIRED
    assert world.token.balance_of(buyer.address) == 10_000 * TOKEN
    assert [world.staking.heavy_node(n.address).stake for n in nodes] == stakes
    world.assert_accounting()


def test_only_members_that_accepted_pay_for_an_expired_job(world: World, buyer):
    nodes = world.heavy_nodes(3)
    stake, penalty = world.config.min_heavy_node_stake, world.config.liveness_penalty
    job_id = world.post(buyer, nodes, accept=nodes[:2], window=50)
    world.chain.increase_time(50 + world.config.settlement_grace + 1)
    receipt = world.escrow.expire(world.deployer, job_id)
    penalized = {e["node"] for e in receipt.events(world.escrow.contract, "HeavyNodePenalized")}
    assert penalized == {n.address for n in nodes[:2]}
    assert world.staking.heavy_node(nodes[0].address).stake == stake - penalty
    assert world.staking.heavy_node(nodes[2].address).stake == stake
    world.assert_accounting()


# ---------------------------------------------------------------------------------- fees
@pytest.fixture
def finalized(world: World, buyer):
    """A job with five members, four of which accepted and three (a quorum) signed the
    finalize: `nodes[3]` accepted and was left out, `nodes[4]` never accepted."""
    nodes = world.heavy_nodes(5)
    accepted = nodes[:4]
    budget, fee_bps = 1_000 * TOKEN + 3, 1_000
    job_id = world.post(buyer, nodes, accept=accepted, budget=budget, fee_bps=fee_bps)
    result, _ = world.result(job_id, {})
    world.escrow.finalize(buyer, result, world.sign(accepted[:3], result))
    return nodes, job_id, result, fee_split(budget, fee_bps, 4)


def _claim_signature(world: World, node, result):
    return sign_digest(node, world.escrow.result_digest(result))


def test_a_member_left_out_of_finalize_claims_its_share(world: World, finalized, buyer):
    nodes, job_id, result, split = finalized
    assert world.escrow.job(job_id).fee_held == split.each
    late = nodes[3]
    before = world.token.balance_of(late.address)
    relayer = world.account()
    receipt = world.escrow.claim_fee(relayer, job_id, _claim_signature(world, late, result))
    (paid,) = receipt.events(world.escrow.contract, "FeePaid")
    assert paid == {"jobId": job_id, "node": late.address, "amount": split.each}
    assert world.token.balance_of(late.address) == before + split.each
    assert world.token.balance_of(relayer.address) == 0
    assert world.staking.heavy_node(late.address).fees_earned == split.each
    assert world.escrow.job(job_id).fee_held == 0
    world.assert_accounting()


def test_claim_fee_reverts(world: World, finalized, buyer):
    nodes, job_id, result, _ = finalized
    with pytest.raises(E.MarketplaceFeeAlreadyPaid):  # paid at finalize
        world.escrow.claim_fee(nodes[0], job_id, _claim_signature(world, nodes[0], result))
    with pytest.raises(E.MarketplaceSignerNotAccepted):  # drawn, never accepted
        world.escrow.claim_fee(nodes[4], job_id, _claim_signature(world, nodes[4], result))
    other, _ = world.result(job_id, {})
    with pytest.raises(E.MarketplaceSignerNotAccepted):  # a signature over another result
        world.escrow.claim_fee(nodes[3], job_id, _claim_signature(world, nodes[3], other))
    with pytest.raises(E.MarketplaceInvalidSignature):
        world.escrow.claim_fee(nodes[3], job_id, b"\x01" * 65)
    posted = world.escrow.post_job(buyer, world.params(3, budget=10 * TOKEN))
    with pytest.raises(E.MarketplaceJobNotFinalized):
        world.escrow.claim_fee(nodes[3], posted, _claim_signature(world, nodes[3], result))
    job = world.escrow.job(job_id)
    closes = job.deadline + world.config.settlement_grace + world.config.report_window
    world.chain.increase_time(closes - world.chain.now() + 1)
    with pytest.raises(E.MarketplaceFeeClaimClosed):
        world.escrow.claim_fee(nodes[3], job_id, _claim_signature(world, nodes[3], result))


def test_release_fees_refunds_unclaimed_shares_after_the_window(world: World, finalized, buyer):
    nodes, job_id, result, split = finalized
    with pytest.raises(E.MarketplaceFeeClaimOpen):
        world.escrow.release_fees(buyer, job_id)
    job = world.escrow.job(job_id)
    closes = job.deadline + world.config.settlement_grace + world.config.report_window
    world.chain.increase_time(closes - world.chain.now() + 1)
    before = world.token.balance_of(buyer.address)
    receipt = world.escrow.release_fees(world.account(), job_id)
    (event,) = receipt.events(world.escrow.contract, "FeesReleased")
    assert event == {"jobId": job_id, "refund": split.each}
    assert world.token.balance_of(buyer.address) == before + split.each
    with pytest.raises(E.MarketplaceZeroAmount):
        world.escrow.release_fees(buyer, job_id)
    with pytest.raises(E.MarketplaceJobNotFound):
        world.escrow.release_fees(buyer, 404)
    posted = world.escrow.post_job(buyer, world.params(3, budget=10 * TOKEN))
    with pytest.raises(E.MarketplaceJobNotFinalized):
        world.escrow.release_fees(buyer, posted)
    world.assert_accounting()
