"""The `market` command: the group that every command group joins (each in its own module of
`market/cli`)."""

from __future__ import annotations

import click

from market.cli.bench import bench
from market.cli.bounty import bounty_group
from market.cli.claim import claim
from market.cli.common import MarketGroup
from market.cli.dataset import dataset_group
from market.cli.demo import demo
from market.cli.heavy import heavy_group
from market.cli.network_cmds import balance, deploy_cmd, devnet_group, faucet
from market.cli.node import node_group
from market.cli.valuation_cmds import valuation_group
from market.cli.wallet import wallet_group


@click.group(cls=MarketGroup)
@click.version_option(package_name="data-market", prog_name="market")
def main() -> None:
    """A marketplace for computations over data that never leaves its owners.

    Accounts live in $MARKET_HOME (default ~/.market). Commands that touch the chain take
    --network embedded (default: an in-process chain kept in $MARKET_HOME), --network devnet
    (`market devnet up`), or --rpc-url URL."""


for command in (
    wallet_group,
    devnet_group,
    faucet,
    deploy_cmd,
    balance,
    bounty_group,
    dataset_group,
    heavy_group,
    claim,
    node_group,
    bench,
    valuation_group,
    demo,
):
    main.add_command(command)
