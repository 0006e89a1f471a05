"""postJob, postJobWithPermit, finalize, abort, expire: behaviour and every revert. (Drawing and
accepting the committee, and fee claims, are in test_committee.py.)"""

from __future__ import annotations

import pytest

from market.chain import TOKEN, MarketConfig
from market.chain import errors as E
from market.escrow import JobState, Slash
from market.escrow.eip712 import sign_digest
from tests.contracts.world import World, fee_split


@pytest.fixture
def committee(world: World):
    return world.heavy_nodes(3)


@pytest.fixture
def buyer(world: World):
    return world.account(10_000 * TOKEN)


# ---------------------------------------------------------------------------------- posting
def test_post_job_escrows_budget_and_records_everything(world: World, committee, buyer):
    params = world.params(committee, budget=500 * TOKEN, fee_bps=300, min_participants=2)
    receipt = world.escrow.submit_job(buyer, params, use_permit=False)
    job_id = world.escrow.posted_job_id(receipt)
    job = world.escrow.job(job_id)
    assert job_id == 1 == world.escrow.job_count()
    assert job.state is JobState.POSTED and job.buyer == buyer.address
    assert (job.budget, job.fee_bps, job.min_participants) == (500 * TOKEN, 300, 2)
    assert (job.committee_size, job.quorum, job.spec_hash) == (3, 2, params.spec_hash)
    assert job.posted_at <= params.deadline == job.deadline
    # Nobody named the committee: it is drawn later from the hash of the posting block.
    assert job.committee == () and job.accepted_mask == 0
    assert job.draw_block == receipt.block_number
    assert job.accept_by == min(job.posted_at + world.config.accept_window, job.deadline)
    assert world.token.balance_of(buyer.address) == 9_500 * TOKEN
    assert world.escrow.totals().escrowed == 500 * TOKEN
    world.assert_accounting()


def test_post_job_with_permit_needs_no_prior_approval(world: World, committee, buyer):
    assert world.token.allowance(buyer.address, world.market) == 0
    job_id = world.escrow.post_job(buyer, world.params(committee, budget=7 * TOKEN))
    assert world.escrow.job(job_id).budget == 7 * TOKEN
    assert world.token.allowance(buyer.address, world.market) == 0


def test_post_job_without_allowance_reverts_with_erc20_error(world: World, committee, buyer):
    fn = world.escrow.contract.functions.postJob(world.params(committee).as_abi())
    with pytest.raises(E.ERC20InsufficientAllowance):
        world.chain.transact(buyer, fn)
    assert world.escrow.job_count() == 0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"budget": 0}, E.MarketplaceZeroAmount),
        ({"budget": 2**128}, E.MarketplaceAmountTooLarge),
        ({"fee_bps": 5_001}, E.MarketplaceFeeTooHigh),
        ({"max_slash_bps": 10_001}, E.MarketplaceSlashBpsTooHigh),
        ({"window": 0}, E.MarketplaceDeadlineOutOfRange),
        ({"window": 8 * 86_400}, E.MarketplaceDeadlineOutOfRange),
        ({"min_participants": 0}, E.MarketplaceInvalidMinParticipants),
        ({"quorum": 1}, E.MarketplaceInvalidQuorum),
        ({"quorum": 4}, E.MarketplaceInvalidQuorum),
        ({"committee": 0}, E.MarketplaceInvalidCommitteeSize),
        ({"committee": 17}, E.MarketplaceInvalidCommitteeSize),
        ({"committee": 4}, E.MarketplaceNotEnoughHeavyNodes),
        ({"committee": 2, "quorum": 2}, E.MarketplaceCommitteeTooSmallToSlash),
        ({"committee": 1, "max_slash_bps": 1}, E.MarketplaceCommitteeTooSmallToSlash),
    ],
)
def test_post_job_rejects_bad_parameters(world: World, committee, buyer, options, error):
    options = dict(options)  # the table is shared by both backends' runs
    size = options.pop("committee", committee)
    with pytest.raises(error):
        world.escrow.post_job(buyer, world.params(size, **options))
    assert world.escrow.job_count() == 0
    assert world.token.balance_of(buyer.address) == 10_000 * TOKEN


def test_post_job_needs_enough_active_heavy_nodes_besides_the_buyer(world: World, committee):
    """The size is checked against the active registry: unbonding nodes and the buyer's own
    node do not count."""
    assert set(world.escrow.registry()) == {n.address for n in committee}
    buyer = committee[0]
    world.token.transfer(world.deployer, buyer.address, 100 * TOKEN)
    with pytest.raises(E.MarketplaceNotEnoughHeavyNodes) as info:
        world.escrow.post_job(buyer, world.params(3, budget=10 * TOKEN))
    assert info.value.values == {"available": 2, "needed": 3}
    job_id = world.post(buyer, committee[1:], budget=10 * TOKEN, max_slash_bps=0)
    assert buyer.address not in world.escrow.job(job_id).committee
    world.staking.request_heavy_node_unstake(committee[1])
    assert committee[1].address not in world.escrow.registry()
    with pytest.raises(E.MarketplaceNotEnoughHeavyNodes):
        world.escrow.post_job(buyer, world.params(2, budget=10 * TOKEN, max_slash_bps=0))
    # A committee of one or two may serve a job that slashes nobody.
    world.post(buyer, committee[2:], budget=10 * TOKEN, max_slash_bps=0)


# ---------------------------------------------------------------------------------- finalize
def test_finalize_pays_fee_payouts_and_refund(world: World, committee, buyer):
    budget, fee_bps = 1_001 * TOKEN + 7, 1_000
    job_id = world.post(buyer, committee, budget=budget, fee_bps=fee_bps)
    providers = [world.account() for _ in range(5)]
    payouts = {p.address: (i + 1) * 10 * TOKEN for i, p in enumerate(providers)}
    result, tree = world.result(job_id, payouts)
    signers = committee[:2]
    node_before = [world.token.balance_of(n.address) for n in committee]
    world.escrow.finalize(committee[2], result, world.sign(signers, result))

    # Three members accepted: each earns a third of the fee, the signers now, the third member
    # when it claims; the remainder of the division goes back to the buyer.
    split = fee_split(budget, fee_bps, 3)
    job = world.escrow.job(job_id)
    assert job.state is JobState.FINALIZED and job.payout_root == tree.root
    assert job.result_hash == result.result_hash and job.unclaimed == result.payout_total
    assert job.fee_held == split.each
    refund = budget - split.fee - result.payout_total + split.remainder
    assert world.token.balance_of(buyer.address) == 10_000 * TOKEN - budget + refund
    gained = [
        world.token.balance_of(n.address) - b for n, b in zip(committee, node_before, strict=True)
    ]
    assert gained == [split.each, split.each, 0]
    assert world.staking.heavy_node(committee[0].address).fees_earned == split.each
    world.claim_all(job_id, tree)
    for p in providers:
        assert world.token.balance_of(p.address) == payouts[p.address]
        assert world.escrow.is_claimed(job_id, p.address, payouts[p.address])
    assert world.escrow.job(job_id).unclaimed == 0
    world.assert_accounting()


def test_finalize_with_no_payout_refunds_everything_but_the_fee(world: World, committee, buyer):
    job_id = world.post(buyer, committee, budget=100 * TOKEN, fee_bps=500)
    result, _ = world.result(job_id, {}, participants=1)
    world.escrow.finalize(buyer, result, world.sign(committee, result))
    split = fee_split(100 * TOKEN, 500, 3)
    assert world.token.balance_of(buyer.address) == 10_000 * TOKEN - split.fee + split.remainder
    assert world.escrow.job(job_id).fee_held == 0  # every accepted member signed: all paid
    world.assert_accounting()


def test_finalize_reverts(world: World, committee, buyer):
    job_id = world.post(buyer, committee, min_participants=3)
    provider = world.account()
    result, _ = world.result(job_id, {provider.address: 10 * TOKEN}, participants=3)
    sigs = world.sign(committee, result)

    with pytest.raises(E.MarketplaceJobNotFound):
        world.escrow.finalize(buyer, world.result(99, {}, participants=3)[0], sigs)
    few, _ = world.result(job_id, {provider.address: TOKEN}, participants=2)
    with pytest.raises(E.MarketplaceTooFewParticipants):
        world.escrow.finalize(buyer, few, world.sign(committee, few))
    with pytest.raises(E.MarketplaceQuorumNotMet):
        world.escrow.finalize(buyer, result, sigs[:1])
    with pytest.raises(E.MarketplaceSignaturesNotSorted):
        world.escrow.finalize(buyer, result, list(reversed(sigs)))
    with pytest.raises(E.MarketplaceSignaturesNotSorted):
        world.escrow.finalize(buyer, result, [sigs[0], sigs[0]])
    outsider = world.account()
    with pytest.raises(E.MarketplaceSignerNotInCommittee) as info:
        world.escrow.finalize(buyer, result, world.sign([committee[0], outsider], result))
    assert info.value.values["signer"] == outsider.address
    with pytest.raises(E.MarketplaceInvalidSignature):
        world.escrow.finalize(buyer, result, [sigs[0], b"\x01" * 64])
    # A signature over a different result recovers to some unrelated address.
    other, _ = world.result(job_id, {provider.address: 11 * TOKEN}, participants=3)
    with pytest.raises(E.MarketplaceSignerNotInCommittee):
        world.escrow.finalize(buyer, result, world.sign(committee[:2], other))
    greedy, _ = world.result(job_id, {provider.address: 901 * TOKEN}, participants=3)
    with pytest.raises(E.MarketplacePayoutAboveBudget):
        world.escrow.finalize(buyer, greedy, world.sign(committee, greedy))

    world.escrow.finalize(buyer, result, sigs)
    with pytest.raises(E.MarketplaceJobNotPosted):
        world.escrow.finalize(buyer, result, sigs)
    world.assert_accounting()


def test_finalize_after_settlement_window_reverts(world: World, committee, buyer):
    job_id = world.post(buyer, committee, window=100)
    result, _ = world.result(job_id, {})
    world.chain.increase_time(100 + world.config.settlement_grace + 1)
    with pytest.raises(E.MarketplaceSettlementClosed):
        world.escrow.finalize(buyer, result, world.sign(committee, result))
    with pytest.raises(E.MarketplaceSettlementClosed):
        world.escrow.abort(buyer, job_id, "late", world.sign_abort(committee, job_id, "late"))


# ---------------------------------------------------------------------------------- slashing
def test_finalize_slashes_within_signed_caps(world: World, committee, buyer):
    job_id = world.post(buyer, committee, max_slash_bps=3_000)
    good = world.account()
    owner_a, ds_a = world.dataset(stake=100 * TOKEN)
    owner_b, ds_b = world.dataset(stake=100 * TOKEN)
    # a signed 50% but the job caps at 30%; b signed 10%.
    slashes = [Slash(ds_a, 30 * TOKEN), Slash(ds_b, 5 * TOKEN)]
    consents = {
        ds_a: world.consent(owner_a, job_id, ds_a, 5_000),
        ds_b: world.consent(owner_b, job_id, ds_b, 1_000),
    }
    result, tree = world.result(
        job_id,
        {good.address: 60 * TOKEN},
        participants=3,
        slashes=slashes,
        slashed_to_payouts=20 * TOKEN,
    )
    ordered = [consents[s.dataset_id] for s in result.slashes]
    supply = world.token.total_supply()
    buyer_before = world.token.balance_of(buyer.address)
    world.escrow.finalize(buyer, result, world.sign(committee, result), ordered)

    assert world.staking.dataset(ds_a).stake == 70 * TOKEN
    assert world.staking.dataset(ds_b).stake == 95 * TOKEN
    # 35 slashed: 20 into the payout pool, 15 burned; the buyer's refund ignores slashes.
    assert world.token.total_supply() == supply - 15 * TOKEN
    assert world.escrow.totals().burned == 15 * TOKEN
    split = fee_split(1_000 * TOKEN, 1_000, 3)
    assert (
        world.token.balance_of(buyer.address) - buyer_before
        == 1_000 * TOKEN - split.fee + split.remainder - 40 * TOKEN
    )
    world.claim_all(job_id, tree)
    assert world.token.balance_of(good.address) == 60 * TOKEN
    world.assert_accounting()


def test_slash_reverts(world: World, committee, buyer):
    job_id = world.post(buyer, committee, max_slash_bps=3_000)
    owner, ds = world.dataset(stake=100 * TOKEN)
    other_owner, other_ds = world.dataset(stake=100 * TOKEN)

    def attempt(slashes, consents):
        result, _ = world.result(job_id, {}, participants=1, slashes=slashes)
        world.escrow.finalize(buyer, result, world.sign(committee, result), consents)

    ok = world.consent(owner, job_id, ds, 1_000)
    with pytest.raises(E.MarketplaceSlashConsentMismatch):
        attempt([Slash(ds, TOKEN)], [])
    with pytest.raises(E.MarketplaceParticipationNotSigned):
        attempt([Slash(ds, TOKEN)], [world.consent(other_owner, job_id, ds, 1_000)])
    with pytest.raises(E.MarketplaceParticipationNotSigned):  # the cap is part of what is signed
        attempt([Slash(ds, TOKEN)], [type(ok)(2_000, ok.signature)])
    with pytest.raises(E.MarketplaceParticipationNotSigned):  # consent for another job
        attempt([Slash(ds, TOKEN)], [world.consent(owner, job_id + 1, ds, 1_000)])
    with pytest.raises(E.MarketplaceDatasetNotFound):
        attempt([Slash(bytes(32), TOKEN)], [ok])
    # Unsorted slashes (the Result type sorts, so build the raw call).
    pair = sorted([(ds, owner), (other_ds, other_owner)], reverse=True)
    result, _ = world.result(job_id, {}, participants=1)
    raw = (*result.as_abi()[:7], [(d, TOKEN) for d, _ in pair])
    digest = world.chain.call(world.escrow.contract.functions.resultDigest(raw))
    fn = world.escrow.contract.functions.finalize(
        raw,
        [world.consent(o, job_id, d, 1_000).as_abi() for d, o in pair],
        [sign_digest(c, digest) for c in committee],
    )
    with pytest.raises(E.MarketplaceSlashesNotSorted):
        world.chain.transact(buyer, fn)
    with pytest.raises(E.MarketplaceSlashedToPayoutsTooHigh):
        result, _ = world.result(job_id, {}, participants=1, slashes=[Slash(ds, TOKEN)], funded=0)
        result = type(result)(**{**result.__dict__, "slashed_to_payouts": TOKEN + 1})
        world.escrow.finalize(buyer, result, world.sign(committee, result), [ok])


def test_a_slash_above_the_cap_is_capped_not_refused(world: World, committee, buyer):
    """A slash the signed cap does not allow (of the stake as it now is) takes what the cap
    allows and settles the job; the committee's excess is burned from nobody."""
    job_id = world.post(buyer, committee, max_slash_bps=3_000)
    owner, ds = world.dataset(stake=100 * TOKEN)
    result, _ = world.result(job_id, {}, participants=1, slashes=[Slash(ds, 10 * TOKEN + 1)])
    receipt = world.escrow.finalize(
        buyer, result, world.sign(committee, result), [world.consent(owner, job_id, ds, 1_000)]
    )
    (capped,) = receipt.events(world.escrow.contract, "SlashCapped")
    assert (capped["signed"], capped["applied"]) == (10 * TOKEN + 1, 10 * TOKEN)
    assert world.staking.dataset(ds).stake == 90 * TOKEN
    world.assert_accounting()


def test_dataset_that_unbonded_before_the_job_cannot_be_slashed(world: World, committee, buyer):
    owner, ds = world.dataset(stake=100 * TOKEN)
    world.staking.request_dataset_unstake(owner, ds)
    world.chain.increase_time(1)
    job_id = world.post(buyer, committee)
    result, _ = world.result(job_id, {}, slashes=[Slash(ds, TOKEN)])
    with pytest.raises(E.MarketplaceDatasetNotActive):
        world.escrow.finalize(
            buyer, result, world.sign(committee, result), [world.consent(owner, job_id, ds, 1_000)]
        )


def test_dataset_that_unbonds_during_a_job_can_still_be_slashed(world: World, committee, buyer):
    owner, ds = world.dataset(stake=100 * TOKEN)
    job_id = world.post(buyer, committee)
    world.chain.increase_time(1)
    world.staking.request_dataset_unstake(owner, ds)
    result, _ = world.result(job_id, {}, slashes=[Slash(ds, TOKEN)])
    world.escrow.finalize(
        buyer, result, world.sign(committee, result), [world.consent(owner, job_id, ds, 1_000)]
    )
    assert world.staking.dataset(ds).stake == 99 * TOKEN


# ---------------------------------------------------------------------------------- abort / expire
def test_abort_refunds_the_whole_budget(world: World, committee, buyer):
    job_id = world.post(buyer, committee, budget=123 * TOKEN)
    reason = "2 of 5 participants"
    world.escrow.abort(
        committee[0], job_id, reason, world.sign_abort(committee[1:], job_id, reason)
    )
    assert world.escrow.job_state(job_id) is JobState.ABORTED
    assert world.token.balance_of(buyer.address) == 10_000 * TOKEN
    with pytest.raises(E.MarketplaceJobNotPosted):
        world.escrow.abort(buyer, job_id, reason, world.sign_abort(committee, job_id, reason))
    world.assert_accounting()


def test_abort_needs_quorum_over_the_same_reason(world: World, committee, buyer):
    job_id = world.post(buyer, committee)
    with pytest.raises(E.MarketplaceQuorumNotMet):
        world.escrow.abort(buyer, job_id, "x", world.sign_abort(committee[:1], job_id, "x"))
    with pytest.raises(E.MarketplaceSignerNotInCommittee):
        world.escrow.abort(buyer, job_id, "x", world.sign_abort(committee[:2], job_id, "y"))


def test_expire_refunds_and_penalizes_the_members_that_accepted(world: World, committee, buyer):
    stake = world.config.min_heavy_node_stake
    job_id = world.post(buyer, committee, window=50)
    with pytest.raises(E.MarketplaceJobNotExpired) as info:
        world.escrow.expire(buyer, job_id)
    assert (
        info.value.values["expiresAt"]
        == world.escrow.job(job_id).deadline + world.config.settlement_grace + 1
    )
    supply = world.token.total_supply()
    world.chain.increase_time(50 + world.config.settlement_grace + 1)
    world.escrow.expire(world.account(), job_id)
    assert world.escrow.job_state(job_id) is JobState.EXPIRED
    assert world.token.balance_of(buyer.address) == 10_000 * TOKEN
    penalty = world.config.liveness_penalty
    for node in committee:
        assert world.staking.heavy_node(node.address).stake == stake - penalty
    assert world.token.total_supply() == supply - 3 * penalty
    with pytest.raises(E.MarketplaceJobNotPosted):
        world.escrow.expire(buyer, job_id)
    with pytest.raises(E.MarketplaceJobNotFound):
        world.escrow.expire(buyer, 999)
    world.assert_accounting()


def test_invalid_config_is_refused(chain):
    bad = MarketConfig(unbonding_period=MarketConfig().max_job_window)
    with pytest.raises(E.MarketplaceInvalidConfig):
        World.deploy(chain, bad)
