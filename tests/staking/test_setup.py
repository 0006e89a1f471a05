"""Setting up many providers (`Sandbox.datasets`): every dataset staked with one transaction of
its owner, the tokens minted in `faucetMany` batches, and nothing else sent."""

from __future__ import annotations

import math

import pytest

from market import sandbox
from market.chain import TOKEN
from tests.contracts.world import World


def _sent(world: World, address: str) -> int:
    return world.chain.web3.eth.get_transaction_count(address)


def _check(world: World, made, stake: int) -> None:
    count = len(made)
    assert len({dataset_id for _, dataset_id in made}) == count
    for owner, dataset_id in made:
        record = world.staking.dataset(dataset_id)
        assert (record.owner, record.stake) == (owner.address, stake)
        assert world.staking.is_active_dataset(dataset_id)
        assert _sent(world, owner.address) == 1  # its stake, and nothing else
        assert world.token.balance_of(owner.address) == 0
        assert world.token.allowance(owner.address, world.market) == 0
        assert world.chain.balance(owner.address) > 0  # gas money left for later transactions
    world.assert_accounting()


@pytest.mark.parametrize("workers", [1, 4])
def test_datasets_take_one_transaction_each_plus_the_faucet_batches(
    world: World, monkeypatch, workers
):
    monkeypatch.setattr(sandbox, "FAUCET_BATCH", 4)
    stake = world.config.min_dataset_stake
    deployer_before = _sent(world, world.deployer.address)
    staked_before = world.escrow.totals().staked
    made = world.datasets(10, workers=workers)
    assert _sent(world, world.deployer.address) - deployer_before == math.ceil(10 / 4)
    assert world.escrow.totals().staked - staked_before == 10 * stake
    _check(world, made, stake)
    assert [o for o, _ in made] == world.accounts[-10:]


def test_faucet_batches_stay_within_the_faucet_limit(world: World):
    stake = 400_000 * TOKEN  # two per 1,000,000-token faucet call
    before = _sent(world, world.deployer.address)
    made = world.datasets(5, stake=stake)
    assert _sent(world, world.deployer.address) - before == 3
    _check(world, made, stake)
    with pytest.raises(ValueError, match="faucet's limit"):
        world.datasets(1, stake=world.token.faucet_limit() + 1)


def test_dataset_is_two_transactions_for_a_new_owner(world: World):
    before = _sent(world, world.deployer.address)
    owner, dataset_id = world.dataset(stake=20 * TOKEN)
    assert _sent(world, world.deployer.address) == before + 1
    _check(world, [(owner, dataset_id)], 20 * TOKEN)
    # An owner with tokens of its own stakes another dataset in one transaction.
    rich = world.account(30 * TOKEN)
    _, second = world.dataset(owner=rich, stake=30 * TOKEN)
    assert _sent(world, rich.address) == 1
    assert world.staking.dataset(second).owner == rich.address


def test_faucet_limit_is_read_from_the_contract(world: World):
    limit = world.chain.call(world.token.contract.functions.FAUCET_LIMIT())
    assert world.token.faucet_limit() == limit == 1_000_000 * TOKEN
