"""The light node: a provider's side of one job.

It encodes, clips and shares its map output with `compute.round.LightNodeRound`, seals each
share to its heavy node's registered X25519 key, signs each submission with the dataset
owner's key (EIP-712) and posts it. A heavy node that does not answer is skipped (Shamir
tolerates missing holders); a refusal (4xx) is reported with the node's reason.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from numpy.typing import ArrayLike

from compute.messages import RoundConfig
from compute.node.wire import SignedSubmission
from compute.randomness import Randomness, os_rng
from compute.round import LightNodeRound
from market.escrow import EscrowClient, JobView
from market.staking import StakingClient
from market.staking.client import HeavyNodeRecord


class SubmissionRefused(Exception):
    """A heavy node refused a submission; the message carries its reason."""


@dataclass
class Delivery:
    """What happened to one dataset's shares in one job."""

    job_id: int
    dataset: str
    accepted: list[int] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


class Directory:
    """Heavy nodes' endpoints and keys, read from the chain once per node (a light node serving
    many datasets, or many light nodes in one process, share one)."""

    def __init__(self, staking: StakingClient) -> None:
        self.staking = staking
        self._records: dict[str, HeavyNodeRecord] = {}

    def __getitem__(self, address: str) -> HeavyNodeRecord:
        if address not in self._records:
            self._records[address] = self.staking.heavy_node(address)
        return self._records[address]


class LightNode:
    def __init__(
        self,
        owner: LocalAccount,
        escrow: EscrowClient,
        staking: StakingClient,
        http: Any = None,
        rng: Randomness | None = None,
        directory: Directory | None = None,
    ) -> None:
        self.owner = owner
        self.escrow = escrow
        self.staking = staking
        self.http = http or requests.Session()
        self.rng = rng or os_rng()
        self.directory = directory or Directory(staking)

    def submit(
        self, view: JobView, config: RoundConfig, dataset_id: bytes, records: ArrayLike
    ) -> Delivery:
        """Share `records` (the map output) and post one sealed share to each committee member."""
        dataset = "0x" + dataset_id.hex()
        delivery = Delivery(view.job_id, dataset)
        shares = LightNodeRound(config, dataset).submit(records, self.rng)
        for message in shares:
            node = self.directory[view.committee[message.recipient - 1]]
            body = SignedSubmission.create(
                self.owner,
                self.escrow.domain,
                view.job_id,
                dataset_id,
                message.recipient,
                secrets.randbits(64),
                message.share,
                node.encryption_key,
            ).to_json()
            url = f"{node.endpoint.rstrip('/')}/jobs/{view.job_id}/submissions"
            try:
                response = self.http.post(url, json=body, timeout=30)
            except requests.RequestException:
                delivery.unreachable.append(message.recipient)
                continue
            if response.status_code == 200:
                delivery.accepted.append(message.recipient)
            else:
                delivery.refused[message.recipient] = _reason(response)
        if delivery.refused and not delivery.accepted:
            reasons = "; ".join(f"node {n}: {r}" for n, r in delivery.refused.items())
            raise SubmissionRefused(f"job {view.job_id} refused dataset {dataset}: {reasons}")
        return delivery


def _reason(response: Any) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]
