"""stakeDatasetWithPermit and registerHeavyNodeWithPermit (one transaction, no approval), the
permit handling they share with postJobWithPermit (bad permits revert with their own error and
change nothing, front-run permits do not block), and faucetMany."""

from __future__ import annotations

import pytest
from eth_account import Account

from market.chain import TOKEN
from market.chain import errors as E
from market.chain.token import Permit, TokenClient
from tests.contracts.world import World

KEY = bytes(range(32))
GAS = 500_000
"""A fixed gas limit: the transaction is mined even if it reverts (no dry run first), so the
tests see what the contract itself does with it."""


def _sent(world: World, account) -> int:
    return world.chain.web3.eth.get_transaction_count(account.address)


def _stake_fn(world: World, dataset_id: bytes, amount: int, permit: Permit, uri: str = "ipfs://m"):
    return world.staking.contract.functions.stakeDatasetWithPermit(
        dataset_id, amount, uri, permit.deadline, permit.v, permit.r, permit.s
    )


def _snapshot(world: World, owner) -> tuple[int, int, int, int]:
    return (
        world.token.balance_of(owner.address),
        world.token.allowance(owner.address, world.market),
        world.token.nonces(owner.address),
        world.escrow.totals().staked,
    )


# ---------------------------------------------------------------------------------- datasets
def test_stake_dataset_takes_one_transaction_with_a_permit(world: World):
    stake = world.config.min_dataset_stake
    owner = world.account(stake)
    before = _sent(world, owner)
    receipt = world.staking.stake_dataset(owner, b"\x01" * 32, stake, "ipfs://one")
    assert _sent(world, owner) == before + 1
    (event,) = receipt.events(world.staking.contract, "DatasetStaked")
    assert (event["owner"], event["stake"], event["metadataURI"]) == (
        owner.address, stake, "ipfs://one",
    )  # fmt: skip
    record = world.staking.dataset(b"\x01" * 32)
    assert (record.owner, record.stake) == (owner.address, stake)
    assert world.token.balance_of(owner.address) == 0
    assert world.token.allowance(owner.address, world.market) == 0  # the permit was used up
    assert world.token.nonces(owner.address) == 1
    world.assert_accounting()


def test_one_permit_transaction_costs_less_gas_than_approve_and_stake(world: World):
    stake = world.config.min_dataset_stake
    world.dataset()  # the market's own counters and balance exist already
    approver, permitter = world.account(stake), world.account(stake)  # never signed a permit
    two = world.token.approve(approver, world.market, stake).gas_used
    two += world.staking.stake_dataset(approver, b"\x0a" * 32, stake, "ipfs://m").gas_used
    one = world.staking.stake_dataset(permitter, b"\x0b" * 32, stake, "ipfs://m").gas_used
    assert one < two


def test_stake_dataset_with_an_allowance_sends_no_permit(world: World):
    stake = world.config.min_dataset_stake
    owner = world.account(stake)
    world.token.approve(owner, world.market, stake)
    before = _sent(world, owner)
    world.staking.stake_dataset(owner, b"\x02" * 32, stake, "")
    assert _sent(world, owner) == before + 1
    assert world.token.nonces(owner.address) == 0  # plain stakeDataset: no permit signed
    assert world.staking.is_active_dataset(b"\x02" * 32)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("exists", E.MarketplaceDatasetExists),
        ("low", E.MarketplaceStakeTooLow),
        ("large", E.MarketplaceAmountTooLarge),
        ("balance", E.ERC20InsufficientBalance),
    ],
)
def test_stake_dataset_with_permit_makes_every_check_of_stake_dataset(world: World, case, error):
    stake = world.config.min_dataset_stake
    _, taken = world.dataset()
    owner = world.account(stake)
    dataset_id, amount = {
        "exists": (taken, stake),
        "low": (b"\x03" * 32, stake - 1),
        "large": (b"\x03" * 32, 2**128),
        "balance": (b"\x03" * 32, stake + 1),
    }[case]
    permit = world.token.permit(owner, world.market, amount)
    before = _snapshot(world, owner)
    with pytest.raises(error):
        world.chain.transact(owner, _stake_fn(world, dataset_id, amount, permit), gas=GAS)
    assert _snapshot(world, owner) == before  # the permit was undone with the rest
    assert world.staking.dataset(taken).stake == stake


def _expired(world: World, owner, amount: int) -> Permit:
    return world.token.sign_permit(owner, world.market, amount, world.chain.now() - 1)


def _wrong_signer(world: World, owner, amount: int) -> Permit:
    return world.token.permit(Account.create(), world.market, amount)


def _other_amount(world: World, owner, amount: int) -> Permit:
    signed = world.token.permit(owner, world.market, amount - 1)
    return Permit(amount, signed.deadline, signed.v, signed.r, signed.s)


def _used(world: World, owner, amount: int) -> Permit:
    """A permit whose nonce an earlier permit (now spent by a stake) already took."""
    permit = world.token.permit(owner, world.market, amount)
    world.chain.transact(
        owner,
        world.token.contract.functions.permit(
            owner.address, world.market, amount, permit.deadline, permit.v, permit.r, permit.s
        ),
    )
    world.token.approve(owner, world.market, 0)
    return permit


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (_expired, E.ERC2612ExpiredSignature),
        (_wrong_signer, E.ERC2612InvalidSigner),
        (_other_amount, E.ERC2612InvalidSigner),
        (_used, E.ERC2612InvalidSigner),
    ],
)
def test_bad_permit_reverts_with_its_own_error_and_changes_nothing(world: World, make, error):
    stake = world.config.min_dataset_stake
    owner = world.account(stake)
    permit = make(world, owner, stake)
    before = _snapshot(world, owner)
    with pytest.raises(error):  # mined and reverted: the contract's answer, not the client's
        world.chain.transact(owner, _stake_fn(world, b"\x04" * 32, stake, permit), gas=GAS)
    with pytest.raises(error):  # and refused by the dry run, which sends nothing
        world.staking.stake_dataset_with_permit(owner, b"\x04" * 32, stake, "", permit)
    assert _snapshot(world, owner) == before
    assert not world.staking.dataset(b"\x04" * 32).exists
    world.assert_accounting()


def test_bad_permit_reverts_even_with_a_smaller_allowance(world: World):
    stake = world.config.min_dataset_stake
    owner = world.account(stake)
    world.token.approve(owner, world.market, stake - 1)
    with pytest.raises(E.ERC2612ExpiredSignature):
        world.chain.transact(
            owner, _stake_fn(world, b"\x05" * 32, stake, _expired(world, owner, stake)), gas=GAS
        )
    assert world.token.allowance(owner.address, world.market) == stake - 1


def test_front_run_permit_does_not_block_the_stake(world: World):
    stake = world.config.min_dataset_stake
    owner, griefer = world.account(stake), world.account()
    permit = world.token.permit(owner, world.market, stake)
    # The griefer copies the permit out of the owner's pending transaction and submits it first.
    world.chain.transact(
        griefer,
        world.token.contract.functions.permit(
            owner.address, world.market, stake, permit.deadline, permit.v, permit.r, permit.s
        ),
    )
    assert world.token.allowance(owner.address, world.market) == stake
    world.chain.transact(owner, _stake_fn(world, b"\x06" * 32, stake, permit), gas=GAS)
    assert world.staking.dataset(b"\x06" * 32).owner == owner.address
    assert world.token.allowance(owner.address, world.market) == 0
    world.assert_accounting()


def test_a_covering_allowance_makes_any_permit_unnecessary(world: World):
    stake = world.config.min_dataset_stake
    owner = world.account(stake)
    world.token.approve(owner, world.market, stake)
    world.chain.transact(
        owner, _stake_fn(world, b"\x07" * 32, stake, _expired(world, owner, stake)), gas=GAS
    )
    assert world.staking.is_active_dataset(b"\x07" * 32)


# ---------------------------------------------------------------------------------- heavy nodes
def test_register_heavy_node_takes_one_transaction_with_a_permit(world: World):
    stake = world.config.min_heavy_node_stake
    node = world.account(stake)
    before = _sent(world, node)
    world.staking.register_heavy_node(node, stake, "http://127.0.0.1:9000", KEY)
    assert _sent(world, node) == before + 1
    record = world.staking.heavy_node(node.address)
    assert (record.stake, record.registered, record.encryption_key) == (stake, True, KEY)
    assert world.staking.is_active_heavy_node(node.address)
    assert world.token.allowance(node.address, world.market) == 0
    world.assert_accounting()


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("endpoint", E.MarketplaceEmptyEndpoint),
        ("low", E.MarketplaceStakeTooLow),
        ("again", E.MarketplaceHeavyNodeAlreadyRegistered),
        ("expired", E.ERC2612ExpiredSignature),
    ],
)
def test_register_heavy_node_with_permit_checks(world: World, case, error):
    stake = world.config.min_heavy_node_stake
    node = world.account(2 * stake)
    if case == "again":
        world.staking.register_heavy_node(node, stake, "http://x", KEY)
    amount = stake - 1 if case == "low" else stake
    if case == "expired":
        permit = _expired(world, node, amount)
    else:
        permit = world.token.permit(node, world.market, amount)
    fn = world.staking.contract.functions.registerHeavyNodeWithPermit(
        amount, "" if case == "endpoint" else "http://x", KEY,
        permit.deadline, permit.v, permit.r, permit.s,
    )  # fmt: skip
    before = _snapshot(world, node)
    with pytest.raises(error):
        world.chain.transact(node, fn, gas=GAS)
    assert _snapshot(world, node) == before
    assert world.staking.heavy_node(node.address).registered == (case == "again")


# ---------------------------------------------------------------------------------- jobs
def test_post_job_with_a_bad_permit_reverts_with_its_own_error(world: World):
    committee = world.heavy_nodes(3)
    buyer = world.account(100 * TOKEN)
    params = world.params(committee, budget=10 * TOKEN)
    permit = _expired(world, buyer, params.budget)
    fn = world.escrow.contract.functions.postJobWithPermit(
        params.as_abi(), permit.deadline, permit.v, permit.r, permit.s
    )
    with pytest.raises(E.ERC2612ExpiredSignature):
        world.chain.transact(buyer, fn, gas=GAS)
    assert world.escrow.job_count() == 0
    world.token.approve(buyer, world.market, params.budget)  # an allowance makes it pass
    world.chain.transact(buyer, fn)
    assert world.escrow.job_count() == 1


# ---------------------------------------------------------------------------------- faucetMany
def test_faucet_many_mints_to_each_receiver(world: World):
    sender = world.account()
    receivers = [Account.create().address for _ in range(5)]
    supply = world.token.total_supply()
    before = _sent(world, sender)
    world.token.faucet_many(sender, receivers + receivers[:1], 3 * TOKEN)
    assert _sent(world, sender) == before + 1
    assert [world.token.balance_of(a) for a in receivers] == [6 * TOKEN] + [3 * TOKEN] * 4
    assert world.token.total_supply() == supply + 18 * TOKEN
    world.token.faucet_many(sender, [], 3 * TOKEN)  # nothing to mint
    assert world.token.total_supply() == supply + 18 * TOKEN


def test_faucet_many_limit_is_on_the_call_total(world: World):
    sender = world.account()
    limit = world.chain.call(world.token.contract.functions.FAUCET_LIMIT())
    a, b = Account.create().address, Account.create().address
    world.token.faucet_many(sender, [a, b], limit // 2)  # exactly the limit in all
    assert world.token.balance_of(a) == world.token.balance_of(b) == limit // 2
    with pytest.raises(E.DataTokenFaucetAboveLimit) as info:
        world.token.faucet_many(sender, [a, b], limit // 2 + 1)
    assert info.value.values == {"requested": limit + 2, "limit": limit}
    with pytest.raises(E.DataTokenFaucetAboveLimit) as info:
        world.token.faucet_many(sender, [a], 2**255)  # would overflow the total
    assert info.value.values == {"requested": 2**255, "limit": limit}
    with pytest.raises(E.ERC20InvalidReceiver):
        world.token.faucet_many(sender, [a, "0x" + "00" * 20], 1)
    assert world.token.balance_of(a) == limit // 2


def test_faucet_many_disabled_on_public_deployments(chain):
    deployer = Account.create()
    chain.fund(deployer.address, 10**18)
    token = TokenClient(
        chain, chain.deploy(deployer, "DataToken", deployer.address, 0, False).address
    )
    with pytest.raises(E.DataTokenFaucetDisabled):
        token.faucet_many(deployer, [deployer.address], 1)
    with pytest.raises(E.DataTokenFaucetDisabled):
        token.faucet_many(deployer, [], 0)
    assert token.total_supply() == 0
