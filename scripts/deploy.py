"""Deploys DataToken and Marketplace with `market.chain.deploy_market`'s defaults and prints where.

`ape run deploy [--network ethereum:local:test]` deploys through ape's provider, from ape's first
test account or the ape account named by $APE_DEPLOYER.

`python -m scripts.deploy [--rpc-url URL] [--private-key KEY]` (or `python scripts/deploy.py`)
deploys through the market package: an embedded chain unless --rpc-url / $ETH_RPC_URL, and a new
deployer funded by the devnet unless --private-key / $MARKET_DEPLOYER_KEY.
"""

from __future__ import annotations

import argparse
import inspect
import os

from eth_account import Account

from market.chain import Chain, ChainError, Deployment, MarketConfig, deploy_market

DEFAULTS = {
    name: param.default
    for name, param in inspect.signature(deploy_market).parameters.items()
    if param.default is not param.empty
}
"""`deploy_market`'s own defaults (initial_supply, faucet), so both paths deploy the same."""
DEPLOYER_ETHER = 10**21


def main() -> None:
    """`ape run deploy`: the same contracts, compiled by ape, sent through ape's provider."""
    from ape import accounts, chain, project

    alias = os.environ.get("APE_DEPLOYER")
    deployer = accounts.load(alias) if alias else accounts.test_accounts[0]
    token = project.DataToken.deploy(
        deployer.address, DEFAULTS["initial_supply"], DEFAULTS["faucet"], sender=deployer
    )
    market = project.Marketplace.deploy(token.address, MarketConfig().as_tuple(), sender=deployer)
    print(
        Deployment(
            chain.chain_id, token.address, market.address, deployer.address, chain.blocks.height
        ).to_json()
    )


def run(argv: list[str] | None = None) -> None:
    """`python -m scripts.deploy`: the committed artifacts, sent through `market.chain.Chain`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rpc-url",
        default=os.environ.get("ETH_RPC_URL"),
        help="JSON-RPC endpoint (default: $ETH_RPC_URL, else an embedded chain)",
    )
    parser.add_argument(
        "--private-key",
        default=os.environ.get("MARKET_DEPLOYER_KEY"),
        help="deployer key (default: $MARKET_DEPLOYER_KEY, else a new devnet-funded account)",
    )
    args = parser.parse_args(argv)
    try:
        with Chain.rpc(args.rpc_url) if args.rpc_url else Chain.embedded() as chain:
            if args.private_key:
                deployer = Account.from_key(args.private_key)
            elif not chain.backend.is_devnet:
                raise ChainError(f"{args.rpc_url} is not a devnet: pass a funded --private-key")
            else:
                deployer = Account.create()
                chain.fund(deployer.address, DEPLOYER_ETHER)
            print(deploy_market(chain, deployer).to_json())
    except ChainError as exc:
        raise SystemExit(f"deploy: {exc}") from None


if __name__ == "__main__":
    run()
