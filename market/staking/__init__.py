"""Dataset and heavy-node stakes: the client and the pure slash/unbonding rules."""

from market.staking.client import DatasetRecord, HeavyNodeRecord, StakingClient

__all__ = ["DatasetRecord", "HeavyNodeRecord", "StakingClient"]
