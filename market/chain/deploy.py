"""Deploying the token and the marketplace, and remembering where they are."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from market.chain.client import Chain
from market.chain.errors import ChainError
from market.chain.units import TOKEN

"""One DATA in base units (18 decimals)."""

DAY = 86_400


@dataclass(frozen=True)
class MarketConfig:
    """The marketplace's deployment parameters (the contract's `Config`), durations in seconds."""

    max_job_window: int = 7 * DAY
    """Longest time between posting a job and its deadline."""
    settlement_grace: int = DAY
    """Time after the deadline in which the committee may still finalize or abort."""
    report_window: int = 7 * DAY
    """Time after `deadline + settlement_grace` in which equivocation can be reported."""
    unbonding_period: int = 16 * DAY
    """Unstake-to-withdraw delay; must exceed the three windows above together."""
    min_heavy_node_stake: int = 1_000 * TOKEN
    min_dataset_stake: int = 10 * TOKEN
    liveness_penalty: int = 100 * TOKEN
    """Burned from each committee member's stake when its job expires."""
    equivocation_slash_bps: int = 5_000
    reporter_reward_bps: int = 1_000
    accept_window: int = 10 * 60
    """Time after posting in which drawn committee members accept the job (a job whose quorum
    has not accepted by then is refunded); light nodes submit once acceptance is over."""

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(asdict(self).values())


@dataclass(frozen=True)
class Deployment:
    """Where a market lives on one chain."""

    chain_id: int
    token: str
    marketplace: str
    deployer: str
    block: int
    config: MarketConfig = field(default_factory=MarketConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        data = dict(data)
        data["config"] = MarketConfig(**data.get("config", {}))
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        return cls.from_dict(json.loads(text))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            return cls.from_json(path.read_text())
        except FileNotFoundError:
            raise ChainError(f"no deployment recorded at {path}; deploy first") from None


def deploy_market(
    chain: Chain,
    deployer: LocalAccount,
    config: MarketConfig | None = None,
    initial_supply: int = 1_000_000_000 * TOKEN,
    faucet: bool = True,
) -> Deployment:
    """Deploys `DataToken` (minting `initial_supply` to the deployer) and `Marketplace`."""
    config = config or MarketConfig()
    token = chain.deploy(deployer, "DataToken", deployer.address, initial_supply, faucet)
    market = chain.deploy(deployer, "Marketplace", token.address, config.as_tuple())
    return Deployment(
        chain_id=chain.chain_id,
        token=token.address,
        marketplace=market.address,
        deployer=deployer.address,
        block=chain.web3.eth.block_number,
        config=config,
    )
