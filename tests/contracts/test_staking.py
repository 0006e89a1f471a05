"""Heavy-node registration and dataset stakes: stake, top up, unbond, withdraw, and every revert."""

from __future__ import annotations

import pytest

from market.chain import TOKEN
from market.chain import errors as E
from tests.contracts.world import World

KEY = bytes(range(32))


def test_heavy_node_lifecycle(world: World):
    stake = world.config.min_heavy_node_stake
    node = world.account(2 * stake)
    world.staking.register_heavy_node(node, stake, "http://127.0.0.1:9000", KEY)
    record = world.staking.heavy_node(node.address)
    assert (record.stake, record.registered, record.endpoint, record.encryption_key) == (
        stake, True, "http://127.0.0.1:9000", KEY,
    )  # fmt: skip
    assert world.staking.is_active_heavy_node(node.address)

    world.staking.update_heavy_node(node, "http://127.0.0.1:9001", bytes(32))
    assert world.staking.heavy_node(node.address).endpoint == "http://127.0.0.1:9001"
    world.staking.top_up_heavy_node(node, stake)
    assert world.staking.heavy_node(node.address).stake == 2 * stake
    world.assert_accounting()

    with pytest.raises(E.MarketplaceNotUnbonding):
        world.staking.withdraw_heavy_node(node)
    world.staking.request_heavy_node_unstake(node)
    assert not world.staking.is_active_heavy_node(node.address)
    with pytest.raises(E.MarketplaceAlreadyUnbonding):
        world.staking.request_heavy_node_unstake(node)
    with pytest.raises(E.MarketplaceAlreadyUnbonding):
        world.staking.top_up_heavy_node(node, stake)
    with pytest.raises(E.MarketplaceStillUnbonding) as info:
        world.staking.withdraw_heavy_node(node)
    world.chain.increase_time(world.config.unbonding_period)
    assert world.chain.now() >= info.value.values["unlockAt"]
    world.staking.withdraw_heavy_node(node)
    assert world.token.balance_of(node.address) == 2 * stake
    assert not world.staking.heavy_node(node.address).registered
    world.assert_accounting()


def test_heavy_node_reverts(world: World):
    stake = world.config.min_heavy_node_stake
    node = world.account(3 * stake)
    with pytest.raises(E.MarketplaceStakeTooLow):
        world.staking.register_heavy_node(node, stake - 1, "http://x", KEY)
    with pytest.raises(E.MarketplaceEmptyEndpoint):
        world.staking.register_heavy_node(node, stake, "", KEY)
    for call in (
        lambda: world.staking.update_heavy_node(node, "http://x", KEY),
        lambda: world.staking.top_up_heavy_node(node, 1),
        lambda: world.staking.request_heavy_node_unstake(node),
        lambda: world.staking.withdraw_heavy_node(node),
    ):
        with pytest.raises(E.MarketplaceHeavyNodeNotRegistered):
            call()
    world.staking.register_heavy_node(node, stake, "http://x", KEY)
    with pytest.raises(E.MarketplaceHeavyNodeAlreadyRegistered):
        world.staking.register_heavy_node(node, stake, "http://x", KEY)
    with pytest.raises(E.MarketplaceEmptyEndpoint):
        world.staking.update_heavy_node(node, "", KEY)
    with pytest.raises(E.MarketplaceZeroAmount):
        world.staking.top_up_heavy_node(node, 0)
    with pytest.raises(E.MarketplaceAmountTooLarge):
        world.chain.transact(node, world.staking.contract.functions.topUpHeavyNode(2**128))


def test_dataset_lifecycle(world: World):
    owner = world.account(100 * TOKEN)
    ds = b"\x11" * 32
    world.staking.stake_dataset(owner, ds, 40 * TOKEN, "ipfs://meta")
    record = world.staking.dataset(ds)
    assert (record.owner, record.stake, record.metadata_uri) == (
        owner.address,
        40 * TOKEN,
        "ipfs://meta",
    )
    assert world.staking.is_active_dataset(ds)
    world.staking.top_up_dataset(owner, ds, 10 * TOKEN)
    assert world.staking.dataset(ds).stake == 50 * TOKEN

    with pytest.raises(E.MarketplaceNotUnbonding):
        world.staking.withdraw_dataset(owner, ds)
    world.staking.request_dataset_unstake(owner, ds)
    assert not world.staking.is_active_dataset(ds)
    with pytest.raises(E.MarketplaceAlreadyUnbonding):
        world.staking.request_dataset_unstake(owner, ds)
    with pytest.raises(E.MarketplaceAlreadyUnbonding):
        world.staking.top_up_dataset(owner, ds, TOKEN)
    with pytest.raises(E.MarketplaceStillUnbonding):
        world.staking.withdraw_dataset(owner, ds)
    world.chain.increase_time(world.config.unbonding_period)
    world.staking.withdraw_dataset(owner, ds)
    assert world.token.balance_of(owner.address) == 100 * TOKEN
    assert not world.staking.dataset(ds).exists
    # The id is free again.
    world.staking.stake_dataset(owner, ds, 10 * TOKEN, "ipfs://meta2")
    world.assert_accounting()


def test_dataset_reverts(world: World):
    owner, ds = world.dataset(stake=20 * TOKEN)
    stranger = world.account(100 * TOKEN)
    with pytest.raises(E.MarketplaceDatasetExists):
        world.staking.stake_dataset(stranger, ds, 20 * TOKEN, "")
    with pytest.raises(E.MarketplaceStakeTooLow):
        world.staking.stake_dataset(stranger, b"\x02" * 32, world.config.min_dataset_stake - 1, "")
    with pytest.raises(E.MarketplaceAmountTooLarge):
        fn = world.staking.contract.functions.stakeDataset(b"\x03" * 32, 2**128, "")
        world.chain.transact(stranger, fn)
    for call in (
        lambda: world.staking.top_up_dataset(stranger, ds, TOKEN),
        lambda: world.staking.request_dataset_unstake(stranger, ds),
        lambda: world.staking.withdraw_dataset(stranger, ds),
    ):
        with pytest.raises(E.MarketplaceNotDatasetOwner):
            call()
    with pytest.raises(E.MarketplaceDatasetNotFound):
        world.staking.top_up_dataset(owner, b"\x09" * 32, TOKEN)
    with pytest.raises(E.MarketplaceZeroAmount):
        world.staking.top_up_dataset(owner, ds, 0)


def test_faucet(world: World):
    user = world.account()
    world.token.faucet(user, user.address, 5 * TOKEN)
    assert world.token.balance_of(user.address) == 5 * TOKEN
    with pytest.raises(E.DataTokenFaucetAboveLimit):
        world.token.faucet(user, user.address, 10**6 * TOKEN + 1)


def test_faucet_disabled_on_public_deployments(chain):
    from eth_account import Account

    from market.chain.token import TokenClient

    deployer = Account.create()
    chain.fund(deployer.address, 10**18)
    token = TokenClient(
        chain, chain.deploy(deployer, "DataToken", deployer.address, 0, False).address
    )
    with pytest.raises(E.DataTokenFaucetDisabled):
        token.faucet(deployer, deployer.address, 1)
