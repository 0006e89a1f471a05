"""One way to reach a chain: embedded py-evm, an Anvil devnet, or any RPC URL."""

from market.chain.client import Chain, Receipt, TransactionRejected
from market.chain.deploy import TOKEN, Deployment, MarketConfig, deploy_market
from market.chain.errors import ChainConnectionError, ChainError, ContractRevert, DevnetError

__all__ = [
    "TOKEN",
    "Chain",
    "ChainConnectionError",
    "ChainError",
    "ContractRevert",
    "Deployment",
    "DevnetError",
    "MarketConfig",
    "Receipt",
    "TransactionRejected",
    "deploy_market",
]
