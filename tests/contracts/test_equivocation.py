"""reportEquivocation: two different results signed by one heavy node for one job."""

from __future__ import annotations

import pytest

from market.chain import TOKEN
from market.chain import errors as E
from market.escrow.eip712 import result_digest, sign_digest
from tests.contracts.world import World


@pytest.fixture
def job(world: World):
    committee = world.heavy_nodes(3)
    buyer = world.account(100 * TOKEN)
    job_id = world.post(buyer, committee, budget=100 * TOKEN)
    a, _ = world.result(job_id, {buyer.address: 10 * TOKEN})
    b, _ = world.result(job_id, {buyer.address: 20 * TOKEN})
    return committee, job_id, a, b


def _sig(world: World, signer, result):
    return sign_digest(signer, result_digest(world.escrow.domain, result))


def test_equivocating_node_is_slashed_and_reporter_rewarded(world: World, job):
    committee, job_id, a, b = job
    cheat, reporter = committee[1], world.account()
    stake = world.staking.heavy_node(cheat.address).stake
    supply = world.token.total_supply()
    world.escrow.report_equivocation(reporter, a, _sig(world, cheat, a), b, _sig(world, cheat, b))
    slashed = stake * world.config.equivocation_slash_bps // 10_000
    reward = slashed * world.config.reporter_reward_bps // 10_000
    assert world.staking.heavy_node(cheat.address).stake == stake - slashed
    assert world.token.balance_of(reporter.address) == reward
    assert world.token.total_supply() == supply - (slashed - reward)
    assert world.escrow.equivocation_reported(job_id, cheat.address)
    with pytest.raises(E.MarketplaceAlreadyReported):
        world.escrow.report_equivocation(
            reporter, a, _sig(world, cheat, a), b, _sig(world, cheat, b)
        )
    world.assert_accounting()


def test_not_an_equivocation(world: World, job):
    committee, job_id, a, b = job
    n0, n1 = committee[0], committee[1]
    with pytest.raises(E.MarketplaceNotEquivocation):  # the same result twice
        world.escrow.report_equivocation(n0, a, _sig(world, n0, a), a, _sig(world, n0, a))
    with pytest.raises(E.MarketplaceNotEquivocation):  # two different signers
        world.escrow.report_equivocation(n0, a, _sig(world, n0, a), b, _sig(world, n1, b))
    other, _ = world.result(job_id + 1, {})
    with pytest.raises(E.MarketplaceNotEquivocation):  # two different jobs
        world.escrow.report_equivocation(n0, a, _sig(world, n0, a), other, _sig(world, n0, other))
    outsider = world.account()
    with pytest.raises(E.MarketplaceSignerNotInCommittee):
        world.escrow.report_equivocation(
            n0, a, _sig(world, outsider, a), b, _sig(world, outsider, b)
        )
    with pytest.raises(E.MarketplaceInvalidSignature):
        world.escrow.report_equivocation(n0, a, b"\x00" * 65, b, _sig(world, n0, b))


def test_report_window_closes(world: World, job):
    committee, job_id, a, b = job
    deadline = world.escrow.job(job_id).deadline
    cfg = world.config
    world.chain.increase_time(
        deadline - world.chain.now() + cfg.settlement_grace + cfg.report_window + 1
    )
    cheat = committee[0]
    with pytest.raises(E.MarketplaceReportWindowClosed):
        world.escrow.report_equivocation(cheat, a, _sig(world, cheat, a), b, _sig(world, cheat, b))


def test_a_finalized_job_can_still_be_reported(world: World, job):
    committee, job_id, a, b = job
    world.escrow.finalize(committee[0], a, world.sign(committee, a))
    cheat = committee[2]
    world.escrow.report_equivocation(cheat, a, _sig(world, cheat, a), b, _sig(world, cheat, b))
    assert world.escrow.equivocation_reported(job_id, cheat.address)
