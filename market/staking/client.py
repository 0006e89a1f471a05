"""Dataset and heavy-node stakes: stake, top up, unbond, withdraw, and their on-chain records."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from market.chain.client import Chain, Receipt
from market.chain.deploy import Deployment
from market.chain.token import Permit, TokenClient


@dataclass(frozen=True)
class HeavyNodeRecord:
    """`Marketplace.HeavyNode`: all zero for an unregistered address."""

    address: str
    stake: int
    unstake_requested_at: int
    registered: bool
    fees_earned: int
    encryption_key: bytes
    endpoint: str


@dataclass(frozen=True)
class DatasetRecord:
    """`Marketplace.Dataset`: owner is the zero address for an unknown id."""

    dataset_id: bytes
    owner: str
    unstake_requested_at: int
    stake: int
    metadata_uri: str

    @property
    def exists(self) -> bool:
        return int(self.owner, 16) != 0


class StakingClient:
    """Typed access to the staking side of the `Marketplace` contract. Registering a heavy node
    and staking a dataset take one transaction: when the allowance does not cover the stake, an
    EIP-2612 permit rides along (`...WithPermit`). Top-ups approve the marketplace for the
    amount first when the allowance does not cover it."""

    def __init__(self, chain: Chain, deployment: Deployment) -> None:
        self.chain = chain
        self.deployment = deployment
        self.contract = chain.contract("Marketplace", deployment.marketplace)
        self.token = TokenClient(chain, deployment.token)

    def _pay_in(self, owner: LocalAccount, amount: int) -> None:
        self.token.ensure_allowance(owner, self.contract.address, amount)

    def _permit(self, owner: LocalAccount, amount: int) -> Permit | None:
        """A permit of `amount` to the marketplace, or None if the allowance already covers it."""
        if self.token.allowance(owner.address, self.contract.address) >= amount:
            return None
        return self.token.permit(owner, self.contract.address, amount)

    # ------------------------------------------------------------------ heavy nodes
    def register_heavy_node(
        self, node: LocalAccount, amount: int, endpoint: str, encryption_key: bytes
    ) -> Receipt:
        """Registers `node` with a stake of `amount` in one transaction: `registerHeavyNode` if
        the allowance covers it, else with a permit."""
        permit = self._permit(node, amount)
        if permit is not None:
            return self.register_heavy_node_with_permit(
                node, amount, endpoint, encryption_key, permit
            )
        fn = self.contract.functions.registerHeavyNode(amount, endpoint, encryption_key)
        return self.chain.transact(node, fn)

    def register_heavy_node_with_permit(
        self, node: LocalAccount, amount: int, endpoint: str, encryption_key: bytes, permit: Permit
    ) -> Receipt:
        """`registerHeavyNodeWithPermit` with `permit` (`TokenClient.permit`)."""
        fn = self.contract.functions.registerHeavyNodeWithPermit(
            amount, endpoint, encryption_key, permit.deadline, permit.v, permit.r, permit.s
        )
        return self.chain.transact(node, fn)

    def update_heavy_node(
        self, node: LocalAccount, endpoint: str, encryption_key: bytes
    ) -> Receipt:
        fn = self.contract.functions.updateHeavyNode(endpoint, encryption_key)
        return self.chain.transact(node, fn)

    def top_up_heavy_node(self, node: LocalAccount, amount: int) -> Receipt:
        self._pay_in(node, amount)
        return self.chain.transact(node, self.contract.functions.topUpHeavyNode(amount))

    def request_heavy_node_unstake(self, node: LocalAccount) -> Receipt:
        return self.chain.transact(node, self.contract.functions.requestHeavyNodeUnstake())

    def withdraw_heavy_node(self, node: LocalAccount) -> Receipt:
        return self.chain.transact(node, self.contract.functions.withdrawHeavyNode())

    def heavy_node(self, address: str) -> HeavyNodeRecord:
        address = to_checksum_address(address)
        raw = self.chain.call(self.contract.functions.getHeavyNode(address))
        stake, requested, registered, fees, key, endpoint = raw
        return HeavyNodeRecord(address, stake, requested, registered, fees, bytes(key), endpoint)

    def heavy_nodes(self) -> list[HeavyNodeRecord]:
        """Every heavy node ever registered, as it stands now (from `HeavyNodeRegistered`)."""
        events = self.chain.events(self.contract, "HeavyNodeRegistered", self.deployment.block)
        return [self.heavy_node(a) for a in dict.fromkeys(e["node"] for e in events)]

    def datasets_of(self, owner: str) -> list[DatasetRecord]:
        """Every dataset `owner` staked and has not withdrawn (from `DatasetStaked`)."""
        events = self.chain.events(
            self.contract, "DatasetStaked", self.deployment.block, owner=to_checksum_address(owner)
        )
        records = [self.dataset(bytes(e["datasetId"])) for e in events]
        return [r for r in records if r.exists]

    def is_active_heavy_node(self, address: str) -> bool:
        fn = self.contract.functions.isActiveHeavyNode(to_checksum_address(address))
        return bool(self.chain.call(fn))

    # ------------------------------------------------------------------ datasets
    def stake_dataset(
        self, owner: LocalAccount, dataset_id: bytes, amount: int, metadata_uri: str
    ) -> Receipt:
        """Stakes `amount` on the new dataset `dataset_id` in one transaction: `stakeDataset` if
        the allowance covers it, else with a permit (no approval transaction)."""
        permit = self._permit(owner, amount)
        if permit is not None:
            return self.stake_dataset_with_permit(owner, dataset_id, amount, metadata_uri, permit)
        fn = self.contract.functions.stakeDataset(dataset_id, amount, metadata_uri)
        return self.chain.transact(owner, fn)

    def stake_dataset_with_permit(
        self,
        owner: LocalAccount,
        dataset_id: bytes,
        amount: int,
        metadata_uri: str,
        permit: Permit,
        gas: int | None = None,
    ) -> Receipt:
        """`stakeDatasetWithPermit` with `permit` (of `owner`, for `amount` to the marketplace:
        `TokenClient.permit`). A fixed `gas` limit sends without a dry run or estimate first
        (a revert then costs the gas, and still raises its named error)."""
        fn = self.contract.functions.stakeDatasetWithPermit(
            dataset_id, amount, metadata_uri, permit.deadline, permit.v, permit.r, permit.s
        )
        return self.chain.transact(owner, fn, gas=gas)

    def top_up_dataset(self, owner: LocalAccount, dataset_id: bytes, amount: int) -> Receipt:
        self._pay_in(owner, amount)
        return self.chain.transact(owner, self.contract.functions.topUpDataset(dataset_id, amount))

    def request_dataset_unstake(self, owner: LocalAccount, dataset_id: bytes) -> Receipt:
        fn = self.contract.functions.requestDatasetUnstake(dataset_id)
        return self.chain.transact(owner, fn)

    def withdraw_dataset(self, owner: LocalAccount, dataset_id: bytes) -> Receipt:
        return self.chain.transact(owner, self.contract.functions.withdrawDataset(dataset_id))

    def dataset(self, dataset_id: bytes) -> DatasetRecord:
        owner, requested, stake, uri = self.chain.call(
            self.contract.functions.getDataset(dataset_id)
        )
        return DatasetRecord(bytes(dataset_id), owner, requested, stake, uri)

    def is_active_dataset(self, dataset_id: bytes) -> bool:
        return bool(self.chain.call(self.contract.functions.isActiveDataset(dataset_id)))
