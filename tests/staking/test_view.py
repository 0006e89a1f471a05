"""The event-driven stake view holds, after each sync, exactly what `getDataset` answers: through
stakes, top-ups, slashes, unbonding and withdrawals, on both backends."""

from __future__ import annotations

from market.chain import TOKEN
from market.escrow import Slash
from market.staking.view import StakeView
from tests.contracts.world import World


def _agrees(world: World, view: StakeView, ids: list[bytes]) -> None:
    view.sync()
    for dataset_id in ids:
        assert view.dataset(dataset_id) == world.staking.dataset(dataset_id)


def test_the_view_follows_every_change_to_a_stake(world: World) -> None:
    committee = world.heavy_nodes(3)
    buyer = world.account(10_000 * TOKEN)
    view = StakeView(world.staking)
    owner_a, a = world.dataset(stake=100 * TOKEN)
    owner_b, b = world.dataset(stake=50 * TOKEN)
    unknown = bytes(range(32))
    _agrees(world, view, [a, b, unknown])
    assert not view.dataset(unknown).exists

    world.token.transfer(world.deployer, owner_a.address, 20 * TOKEN)
    world.staking.top_up_dataset(owner_a, a, 20 * TOKEN)
    job_id = world.post(buyer, committee, max_slash_bps=3_000)
    result, _ = world.result(job_id, {}, participants=2, slashes=[Slash(a, 12 * TOKEN)], funded=0)
    consent = world.consent(owner_a, job_id, a, 1_000)
    world.escrow.finalize(buyer, result, world.sign(committee, result), [consent])
    world.staking.request_dataset_unstake(owner_b, b)
    _agrees(world, view, [a, b])
    assert view.dataset(a).stake == 108 * TOKEN
    assert view.dataset(b).unstake_requested_at > 0

    world.chain.increase_time(world.config.unbonding_period + 1)
    world.staking.withdraw_dataset(owner_b, b)
    world.staking.stake_dataset(owner_b, b, 10 * TOKEN, "ipfs://again")  # the id is free again
    _agrees(world, view, [a, b])
    assert view.dataset(b).metadata_uri == "ipfs://again"


def test_a_missing_dataset_is_looked_up_again_only_when_the_view_may_be_stale(
    world: World,
) -> None:
    now = [0.0]
    view = StakeView(world.staking, clock=lambda: now[0])
    view.sync()
    _, late = world.dataset()
    assert not view.dataset(late).exists  # staked after the last sync
    now[0] = 1.0  # a request that arrived after the last sync started: it syncs and finds it
    assert view.dataset_since(late, since=1.0).exists
    synced = view.synced
    world.dataset()
    view.dataset_since(bytes(32), since=0.5)  # the last sync is newer than the request
    assert view.synced == synced
