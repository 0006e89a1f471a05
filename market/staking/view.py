"""Every dataset's stake record as the chain's events left it: a heavy node's answer to "is this
dataset staked, by whom, how much, since when unbonding" in microseconds, without an `eth_call`
per share.

The view follows the five events that change a `Marketplace.Dataset` (`DatasetStaked`,
`DatasetToppedUp`, `DatasetUnstakeRequested`, `DatasetWithdrawn`, `DatasetSlashed`), read in
chain order with one `eth_getLogs` per sync over the blocks since the last one. After a sync to
block B it holds exactly what `getDataset` answers at B (the unbonding start is the event's
`unlockAt` minus the deployment's unbonding period, which is how the contract computed it).

A stale view could wrongly refuse a dataset staked since (a reader syncs and looks again when a
dataset is missing: `dataset_since`) or wrongly admit one that started unbonding or was slashed
since. The heavy node syncs before it serves a job, so every change up to the job's posting
block is seen, and again at settlement (one read for all participants), so payouts and slashes
use the records as they stand then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hexbytes import HexBytes

from market.chain.client import translate
from market.staking.client import DatasetRecord, StakingClient

ZERO = "0x0000000000000000000000000000000000000000"
EVENTS = (
    "DatasetStaked",
    "DatasetToppedUp",
    "DatasetUnstakeRequested",
    "DatasetWithdrawn",
    "DatasetSlashed",
)


def missing(dataset_id: bytes) -> DatasetRecord:
    """What `getDataset` answers for an unknown id."""
    return DatasetRecord(bytes(dataset_id), ZERO, 0, 0, "")


class StakeView:
    def __init__(
        self,
        staking: StakingClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.staking = staking
        self.clock = clock
        """The clock `dataset_since` compares with (monotonic seconds by default)."""
        self._contract = staking.contract
        self._unbonding = staking.deployment.config.unbonding_period
        self.min_stake = staking.deployment.config.min_dataset_stake
        """The market's minimum dataset stake (a dataset slashed below it is refused)."""
        self._decoders = {
            HexBytes(getattr(self._contract.events, name).topic): getattr(
                self._contract.events, name
            )()
            for name in EVENTS
        }
        self._topics = ["0x" + bytes(topic).hex() for topic in self._decoders]
        """As hex strings (eth-tester matches no topic given as bytes)."""
        self._records: dict[bytes, DatasetRecord] = {}
        self._synced = staking.deployment.block - 1
        """The last block whose events are applied."""
        self._lock = threading.Lock()
        """Held while syncing: one sync at a time."""
        self._started = float("-inf")
        """When the last completed sync started (the view holds every change before it)."""

    @property
    def synced(self) -> int:
        return self._synced

    def dataset(self, dataset_id: bytes) -> DatasetRecord:
        """The record as of the last sync (all zero when the dataset is unknown)."""
        return self._records.get(bytes(dataset_id)) or missing(dataset_id)

    def dataset_since(self, dataset_id: bytes, since: float) -> DatasetRecord:
        """The record, synced again first if the dataset is unknown and the view's last sync
        started before `since` (this view's clock): a dataset staked before a request was sent
        is found. Concurrent callers share one sync."""
        record = self.dataset(dataset_id)
        if not record.exists and self._started < since:
            self.sync(since)
            record = self.dataset(dataset_id)
        return record

    def sync(self, since: float | None = None) -> int:
        """Apply the events up to the chain's latest block; returns that block. With `since`,
        a sync that started at or after it (one that finished while this one waited) is
        enough."""
        with self._lock:
            if since is not None and self._started >= since:
                return self._synced
            started = self.clock()
            chain = self.staking.chain
            try:
                head = chain.web3.eth.block_number
            except Exception as exc:
                raise translate(exc) from None
            for log in chain.raw_logs(self._contract.address, self._topics, self._synced + 1, head):
                self._apply(log)
            self._synced = max(self._synced, head)
            self._started = started
            return self._synced

    def _apply(self, log: Any) -> None:
        event = self._decoders[HexBytes(log["topics"][0])]
        name = event.abi["name"]
        args = event.process_log(log)["args"]
        key = bytes(args["datasetId"])
        old = self._records.get(key) or missing(key)
        if name == "DatasetStaked":
            new = DatasetRecord(key, args["owner"], 0, int(args["stake"]), args["metadataURI"])
        elif name == "DatasetToppedUp":
            new = replace(old, stake=int(args["stake"]))
        elif name == "DatasetUnstakeRequested":
            new = replace(old, unstake_requested_at=int(args["unlockAt"]) - self._unbonding)
        elif name == "DatasetSlashed":
            new = replace(old, stake=old.stake - int(args["amount"]))
        else:  # DatasetWithdrawn: the id is free again
            self._records.pop(key, None)
            return
        self._records[key] = new
