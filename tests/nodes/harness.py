"""A whole market in one process: the embedded chain, heavy nodes serving HTTP on loopback,
light nodes posting to them, and a clock the test moves past deadlines."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from compute.encoding import FieldSpec
from compute.messages import RoundConfig
from compute.reduce import ReduceOp, Reduction
from compute.sharing import scheme_named
from market.escrow import JobView
from market.keys import box_public_key
from market.sandbox import Sandbox
from nodes.heavy import HeavyNode
from nodes.light import LightNode
from nodes.service import Server, create_app
from nodes.store import Store

FIELD = FieldSpec("bp", 80.0, 200.0, scale=1 << 16)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def mean_config(view: JobView) -> RoundConfig:
    return RoundConfig(
        job_id=str(view.job_id),
        reduction=Reduction(ReduceOp.MEAN, FIELD),
        scheme=scheme_named("shamir", n=len(view.committee), threshold=2),
        min_participants=view.min_participants,
    )


@dataclass
class Committee:
    market: Sandbox
    tmp: Path
    clock: Clock = field(default_factory=Clock)
    config_for: Callable[[JobView], RoundConfig] = mean_config
    valuation_for: Callable[[JobView], Any] | None = None
    accounts: list[LocalAccount] = field(default_factory=list)
    min_fee: int = 0
    """Each node's smallest fee share for a job it accepts."""
    nodes: dict[str, HeavyNode] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)

    def start(self, count: int = 3) -> None:
        stake = self.market.config.min_heavy_node_stake
        for _ in range(count):
            account = self.market.account(stake)
            url = self.serve(account)
            self.market.staking.register_heavy_node(account, stake, url, box_public_key(account))
            self.accounts.append(account)
        self.accounts.sort(key=lambda a: int(a.address, 16))

    def post(self, buyer: LocalAccount, **options: int) -> int:
        """Post a job for this committee (the registry holds just its members), draw it and
        wait until the running nodes have accepted it on their own."""
        job_id = self.market.post(buyer, self.accounts, accept=(), **options)
        self.market.wait_ready(job_id)
        return job_id

    def serve(self, account: LocalAccount, port: int = 0) -> str:
        node = HeavyNode(
            account,
            self.market.chain,
            self.market.deployment,
            Store(self.tmp / f"{account.address}.db"),
            self.config_for,
            clock=self.clock,
            peer_timeout=3.0,
            valuation_for=self.valuation_for,
            min_fee=self.min_fee,
        )
        server = Server(create_app(node), port=port)
        url = server.start()
        node.start(interval=0.1)
        self.nodes[account.address], self.servers[account.address] = node, server
        return url

    def kill(self, account: LocalAccount) -> None:
        self.nodes.pop(account.address).stop()
        self.servers.pop(account.address).stop()

    def restart(self, account: LocalAccount) -> None:
        port = int(self.market.staking.heavy_node(account.address).endpoint.rsplit(":", 1)[1])
        self.kill(account)
        self.serve(account, port)

    def stop(self) -> None:
        for address in list(self.nodes):
            self.nodes.pop(address).stop()
            self.servers.pop(address).stop()

    def light(self, owner: LocalAccount) -> LightNode:
        return LightNode(owner, self.market.escrow, self.market.staking)

    def wait_for(self, job_id: int, timeout: float = 60.0):
        from market.escrow import JobState

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.market.escrow.job_state(job_id)
            if state is not JobState.POSTED:
                return state
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still posted after {timeout} s")


def clinic_data(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.normal(128, 15, int(rng.integers(20, 60))) for _ in range(n)]
