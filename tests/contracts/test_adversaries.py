"""Attacks on the market, each test named after the attack it tries. Every one of them succeeded
against the contract in which the buyer named the committee (or, for the registry grinding, the
first version of the draw); each test shows the attack fail now."""

from __future__ import annotations

import itertools

import pytest
from eth_account.signers.local import LocalAccount

from market.chain import TOKEN
from market.chain import errors as E
from market.escrow import JobState, Slash
from market.escrow.eip712 import (
    InvalidSignature,
    abort_digest,
    recover,
    recover_strict,
    result_digest,
    sign_digest,
)
from tests.contracts.draw import block_hash, draw, expected_committee, seed_of
from tests.contracts.world import World, call_at, fee_split, same_block
from tests.signatures import high_s_twin


def _addresses(accounts) -> set[str]:
    return {a.address for a in accounts}


def _sig(world: World, signer: LocalAccount, result) -> bytes:
    return sign_digest(signer, result_digest(world.escrow.domain, result))


def _report_window_end(world: World, job_id: int) -> int:
    cfg = world.config
    return world.escrow.job(job_id).deadline + cfg.settlement_grace + cfg.report_window


# ---------------------------------------------------------------------------------- the draw
def test_buyer_with_own_heavy_nodes_cannot_choose_committee(world: World):
    honest = world.heavy_nodes(4)
    sybils = world.heavy_nodes(3)
    buyer = world.account(world.config.min_heavy_node_stake + 10_000 * TOKEN)
    world.staking.register_heavy_node(
        buyer, world.config.min_heavy_node_stake, "http://b", bytes(32)
    )

    # postJob takes a size; there is no field in which to name a member.
    (post,) = [f for f in world.escrow.contract.abi if f.get("name") == "postJob"]
    fields = {c["name"]: c["type"] for c in post["inputs"][0]["components"]}
    assert "committeeSize" in fields and "address" not in "".join(fields.values())

    pool = world.escrow.registry()
    committees = []
    for _ in range(6):  # one job per block
        job_id = world.escrow.post_job(buyer, world.params(3))
        expected = expected_committee(world, job_id, pool)
        assert world.draw(job_id) == expected  # fixed by the posting block's hash, nothing else
        assert buyer.address not in expected
        with pytest.raises(E.MarketplaceCommitteeAlreadyDrawn):  # no second draw
            world.escrow.draw_committee(buyer, job_id)
        committees.append(expected)
    # Different blocks, different hashes: the committees vary (all six equal: p < 1e-9).
    assert len(set(committees)) > 1
    assert set().union(*committees) <= _addresses(honest + sybils)

    # Nor can the draw run in the posting block, whose hash nobody knows yet.
    world.token.approve(buyer, world.market, 10**30)
    fns = world.escrow.contract.functions
    job_id = world.escrow.job_count() + 1
    posted, drawn = same_block(
        world.chain,
        [(buyer, fns.postJob(world.params(3).as_abi())), (sybils[0], fns.drawCommittee(job_id))],
    )
    assert (posted["status"], drawn["status"]) == (1, 0)
    with pytest.raises(E.MarketplaceDrawTooEarly):
        call_at(world.chain, fns.drawCommittee(job_id), sybils[0].address, posted["blockNumber"])

    # Nodes the draw left out neither accept nor sign.
    committee = world.draw(job_id)
    by_address = {n.address: n for n in honest + sybils}
    members = [by_address[a] for a in committee]
    left_out = [n for n in honest + sybils if n.address not in committee][0]
    with pytest.raises(E.MarketplaceSignerNotInCommittee):
        world.escrow.accept_job(left_out, job_id)
    with pytest.raises(E.MarketplaceSignerNotInCommittee):
        world.escrow.accept_job(buyer, job_id)
    for member in members:
        world.escrow.accept_job(member, job_id)
    result, _ = world.result(job_id, {})
    with pytest.raises(E.MarketplaceSignerNotInCommittee) as info:
        world.escrow.finalize(buyer, result, world.sign([members[0], left_out], result))
    assert info.value.values["signer"] == left_out.address


def _swap_and_pop(registry: list[str], node: str) -> list[str]:
    registry = list(registry)
    at = registry.index(node)
    registry[at] = registry[-1]
    registry.pop()
    return registry


def test_registry_changes_after_the_seed_is_known_cannot_steer_the_draw(world: World):
    """The seed is public once the posting block is mined. A buyer with sybil heavy nodes then
    computes, for every way of unstaking some of them or registering new ones, which committee
    the draw would give, makes the changes that give its sybils a majority, and draws. (This
    worked when the draw read the registry as it stood at the draw, with swap-and-pop removal.)
    The draw reads the registry as it stood at the end of the posting block."""
    world.heavy_nodes(5)
    sybils = world.heavy_nodes(3)
    stake = world.config.min_heavy_node_stake
    buyer = world.account(10_000 * TOKEN + 2 * stake)
    fresh = [world.account(stake) for _ in range(2)]
    pool = list(world.escrow.registry())
    mine = _addresses(sybils)
    for _attempt in range(12):
        job_id = world.escrow.post_job(buyer, world.params(3, budget=100 * TOKEN))
        seed = seed_of(block_hash(world, world.escrow.job(job_id).draw_block), job_id)
        honest_draw = draw(seed, pool, 3, buyer.address)
        assert honest_draw is not None
        if len(set(honest_draw) & mine) >= 2:
            world.draw(job_id)  # lucky already: nothing to steer
            continue
        plans = [
            (leave, join)
            for r in range(len(sybils) + 1)
            for leave in itertools.combinations(sybils, r)
            for join in (fresh[:0], fresh[:1], fresh[:2])
        ]
        for leave, join in plans:
            registry = pool
            for node in leave:
                registry = _swap_and_pop(registry, node.address)
            registry = registry + [n.address for n in join]
            steered = draw(seed, registry, 3, buyer.address)
            if steered and len(set(steered) & (mine | _addresses(join))) >= 2:
                break
        else:
            world.draw(job_id)
            continue
        for node in leave:
            world.staking.request_heavy_node_unstake(node)
        for node in join:
            world.staking.register_heavy_node(node, stake, "http://sybil", bytes(32))
        assert world.draw(job_id) == honest_draw != steered
        return
    pytest.fail("no seed in twelve jobs let the attacker steer the old draw")  # p < 1e-6


# ---------------------------------------------------------------------------------- slashes
def test_self_slash_escape_impossible(world: World):
    """A provider expecting a slash tries to escape it: by a committee of one or two that it
    controls, by sitting on the committee that judges it, or by having its stake slashed first
    in another job so that the honest job's slash (computed on the old stake) cannot settle."""
    nodes = world.heavy_nodes(3)
    buyer = world.account(10_000 * TOKEN)
    for size in (1, 2):
        with pytest.raises(E.MarketplaceCommitteeTooSmallToSlash) as info:
            world.escrow.post_job(buyer, world.params(size, quorum=size, max_slash_bps=1))
        assert info.value.values == {"committeeSize": size, "minimum": 3}
    assert world.chain.call(world.escrow.contract.functions.MIN_SLASHING_COMMITTEE()) == 3

    # The owner of a dataset sits on the committee: its dataset cannot be slashed by it.
    owner = nodes[1]
    world.token.transfer(world.deployer, owner.address, 100 * TOKEN)
    _, own_ds = world.dataset(owner=owner, stake=100 * TOKEN)
    job_id = world.post(buyer, nodes, max_slash_bps=3_000)
    result, _ = world.result(
        job_id, {}, slashes=[Slash(own_ds, 30 * TOKEN)], slashed_to_payouts=0, funded=0
    )
    consent = world.consent(owner, job_id, own_ds, 3_000)
    with pytest.raises(E.MarketplaceSlashedOwnerInCommittee) as info:
        world.escrow.finalize(buyer, result, world.sign(nodes, result), [consent])
    assert info.value.values["owner"] == owner.address

    # Two jobs slash the same stake; the second was computed on the stake before the first.
    provider, ds = world.dataset(stake=100 * TOKEN)
    first = world.post(buyer, nodes, max_slash_bps=3_000)
    second = world.post(buyer, nodes, max_slash_bps=3_000)
    results = {}
    for job in (first, second):
        results[job], _ = world.result(job, {}, slashes=[Slash(ds, 30 * TOKEN)], funded=0)
    consents = {job: world.consent(provider, job, ds, 3_000) for job in (first, second)}
    world.escrow.finalize(
        buyer, results[first], world.sign(nodes, results[first]), [consents[first]]
    )
    assert world.staking.dataset(ds).stake == 70 * TOKEN
    receipt = world.escrow.finalize(
        buyer, results[second], world.sign(nodes, results[second]), [consents[second]]
    )
    (capped,) = receipt.events(world.escrow.contract, "SlashCapped")
    assert (capped["jobId"], capped["signed"], capped["applied"]) == (
        second,
        30 * TOKEN,
        21 * TOKEN,
    )
    assert world.escrow.job_state(second) is JobState.FINALIZED
    assert world.staking.dataset(ds).stake == 49 * TOKEN
    world.assert_accounting()


# ---------------------------------------------------------------------------------- staffing
def test_griefing_job_costs_poster_not_nodes(world: World):
    """A poster floods the market with jobs nobody will serve, hoping the drawn nodes are
    penalized when they expire. Nodes that do not accept lose nothing; the poster paid gas."""
    nodes = world.heavy_nodes(3)
    buyer = world.account(10_000 * TOKEN)
    stakes = {n.address: world.staking.heavy_node(n.address).stake for n in nodes}
    ether = world.chain.balance(buyer.address)
    jobs = [world.post(buyer, nodes, accept=()) for _ in range(2)]
    jobs.append(world.post(buyer, nodes, accept=nodes[:1]))  # a minority accepted
    world.chain.increase_time(world.config.accept_window + 1)
    for job_id in jobs:
        receipt = world.escrow.expire(world.deployer, job_id)
        assert receipt.events(world.escrow.contract, "HeavyNodePenalized") == []
        assert world.escrow.job_state(job_id) is JobState.EXPIRED
    assert {n.address: world.staking.heavy_node(n.address).stake for n in nodes} == stakes
    assert world.token.balance_of(buyer.address) == 10_000 * TOKEN  # budgets back, nothing more
    assert world.chain.balance(buyer.address) < ether  # three postings' gas
    world.assert_accounting()


# ---------------------------------------------------------------------------------- fees
def test_fee_goes_to_workers_not_submitters_choice(world: World):
    """The member that submits `finalize` includes only the signatures it likes, to keep the
    fee among fewer members. Each accepted member's share is fixed; those left out claim it."""
    nodes = world.heavy_nodes(7)
    buyer = world.account(10_000 * TOKEN)
    accepted, never = nodes[:6], nodes[6]
    budget, fee_bps = 1_000 * TOKEN, 1_200
    job_id = world.post(buyer, nodes, accept=accepted, budget=budget, fee_bps=fee_bps)
    result, _ = world.result(job_id, {})
    submitter, signers, left_out = accepted[0], accepted[:4], accepted[4:]
    before = world.token.balance_of(submitter.address)
    world.escrow.finalize(submitter, result, world.sign(signers, result))
    split = fee_split(budget, fee_bps, 6)
    assert world.token.balance_of(submitter.address) - before == split.each  # not fee / 4

    claimer = left_out[0]
    world.escrow.claim_fee(world.deployer, job_id, _sig(world, claimer, result))
    assert world.staking.heavy_node(claimer.address).fees_earned == split.each
    with pytest.raises(E.MarketplaceFeeAlreadyPaid):
        world.escrow.claim_fee(claimer, job_id, _sig(world, claimer, result))
    with pytest.raises(E.MarketplaceSignerNotAccepted):  # drawn, but it never took the job on
        world.escrow.claim_fee(never, job_id, _sig(world, never, result))

    world.chain.increase_time(_report_window_end(world, job_id) - world.chain.now() + 1)
    with pytest.raises(E.MarketplaceFeeClaimClosed):
        world.escrow.claim_fee(left_out[1], job_id, _sig(world, left_out[1], result))
    refunded = world.token.balance_of(buyer.address)
    world.escrow.release_fees(world.deployer, job_id)
    assert world.token.balance_of(buyer.address) - refunded == split.each  # the unclaimed share
    assert world.escrow.job(job_id).fee_held == 0
    world.assert_accounting()


# ---------------------------------------------------------------------------------- equivocation
def test_equivocator_reporting_itself_gets_no_reward(world: World):
    """A member that signed two results reports itself first, to collect the reporter's share
    of its own slash. It gets nothing; the whole slash is burned."""
    nodes = world.heavy_nodes(3)
    buyer = world.account(100 * TOKEN)
    job_id = world.post(buyer, nodes, budget=100 * TOKEN)
    a, _ = world.result(job_id, {})
    b, _ = world.result(job_id, {})
    cheat = nodes[0]
    stake, balance = (
        world.staking.heavy_node(cheat.address).stake,
        world.token.balance_of(cheat.address),
    )
    burned = world.escrow.totals().burned
    receipt = world.escrow.report_equivocation(
        cheat, a, _sig(world, cheat, a), b, _sig(world, cheat, b)
    )
    (event,) = receipt.events(world.escrow.contract, "EquivocationReported")
    slashed = stake * world.config.equivocation_slash_bps // 10_000
    assert (event["reporter"], event["slashed"], event["reward"]) == (cheat.address, slashed, 0)
    assert world.token.balance_of(cheat.address) == balance
    assert world.escrow.totals().burned - burned == slashed
    with pytest.raises(E.MarketplaceAlreadyReported):  # and nobody can report it again
        world.escrow.report_equivocation(
            world.account(), a, _sig(world, cheat, a), b, _sig(world, cheat, b)
        )
    # The same for a result and an abort.
    other = nodes[1]
    reason = "too few participants"
    abort_sig = sign_digest(other, abort_digest(world.escrow.domain, job_id, reason))
    receipt = world.escrow.report_abort_equivocation(
        other, a, _sig(world, other, a), reason, abort_sig
    )
    (event,) = receipt.events(world.escrow.contract, "EquivocationReported")
    assert event["reward"] == 0 and event["slashed"] > 0
    world.assert_accounting()


def test_result_and_abort_signed_by_one_member_is_equivocation(world: World):
    """A member signs a result and an abort for one job, to back whichever side wins."""
    nodes = world.heavy_nodes(3)
    buyer = world.account(100 * TOKEN)
    job_id = world.post(buyer, nodes, budget=100 * TOKEN)
    result, _ = world.result(job_id, {})
    reason = "too few participants"
    cheat, honest, reporter = nodes[2], nodes[0], world.account()

    def abort_sig(signer, why=reason, job=job_id):
        return sign_digest(signer, abort_digest(world.escrow.domain, job, why))

    with pytest.raises(E.MarketplaceNotEquivocation):  # two different signers
        world.escrow.report_abort_equivocation(
            reporter, result, _sig(world, cheat, result), reason, abort_sig(honest)
        )
    with pytest.raises(E.MarketplaceNotEquivocation):  # an abort of another job
        world.escrow.report_abort_equivocation(
            reporter, result, _sig(world, cheat, result), reason, abort_sig(cheat, job=job_id + 1)
        )
    outsider = world.account()
    with pytest.raises(E.MarketplaceSignerNotInCommittee):
        world.escrow.report_abort_equivocation(
            reporter, result, _sig(world, outsider, result), reason, abort_sig(outsider)
        )

    # The abort settles the job; the evidence still slashes the member that signed both.
    world.escrow.abort(honest, job_id, reason, world.sign_abort(nodes[:2], job_id, reason))
    stake = world.staking.heavy_node(cheat.address).stake
    world.escrow.report_abort_equivocation(
        reporter, result, _sig(world, cheat, result), reason, abort_sig(cheat)
    )
    slashed = stake * world.config.equivocation_slash_bps // 10_000
    assert world.staking.heavy_node(cheat.address).stake == stake - slashed
    assert world.token.balance_of(reporter.address) == (
        slashed * world.config.reporter_reward_bps // 10_000
    )
    assert world.escrow.equivocation_reported(job_id, cheat.address)
    with pytest.raises(E.MarketplaceAlreadyReported):
        world.escrow.report_abort_equivocation(
            reporter, result, _sig(world, cheat, result), reason, abort_sig(cheat)
        )
    world.chain.increase_time(_report_window_end(world, job_id) - world.chain.now() + 1)
    with pytest.raises(E.MarketplaceReportWindowClosed):
        world.escrow.report_abort_equivocation(
            reporter, result, _sig(world, honest, result), "other", abort_sig(honest, "other")
        )
    world.assert_accounting()


# ---------------------------------------------------------------------------------- signatures
def _twins(signature: bytes) -> dict[str, bytes]:
    """Other encodings of the same ECDSA signature, which ecrecover would accept too."""
    return {
        "high-s": high_s_twin(signature),  # (r, n - s) with the other parity: 27 <-> 28
        "v-0/1": signature[:64] + bytes([signature[64] - 27]),
        "compact-64": signature[:64],
    }


def test_malleated_signature_rejected_by_contract(world: World):
    """A relayer re-encodes a member's signature (the high-s twin, v as 0/1, 64 bytes) to get a
    "different" signature from the same signer, to count it twice or to claim a fee twice. The
    contract takes only low-s, v in {27, 28}, 65 bytes: what a heavy node must check before it
    forwards a signature."""
    nodes = world.heavy_nodes(3)
    buyer = world.account(100 * TOKEN)
    job_id = world.post(buyer, nodes, budget=100 * TOKEN)
    result, _ = world.result(job_id, {})
    digest = result_digest(world.escrow.domain, result)
    good = world.sign(nodes[:2], result)
    second = sorted(nodes[:2], key=lambda n: int(n.address, 16))[1]
    assert recover_strict(digest, good[1]) == second.address
    for name, twin in _twins(good[1]).items():
        if len(twin) == 65:  # the lenient recovery finds the same signer: it is a real twin
            assert recover(digest, twin) == second.address, name
        with pytest.raises(
            InvalidSignature
        ):  # the heavy node's check refuses what the contract does
            recover_strict(digest, twin)
        with pytest.raises(E.MarketplaceInvalidSignature) as info:
            world.escrow.finalize(buyer, result, [good[0], twin])
        assert info.value.values["index"] == 1, name
    world.escrow.finalize(buyer, result, good)
    # A member left out: its twins do not claim its fee a second time either.
    late = nodes[2]
    original = _sig(world, late, result)
    world.escrow.claim_fee(late, job_id, original)
    for twin in _twins(original).values():
        with pytest.raises(E.MarketplaceInvalidSignature):
            world.escrow.claim_fee(late, job_id, twin)
