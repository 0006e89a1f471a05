"""`market devnet`, `market faucet`, `market deploy`, `market status`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from market.chain.token import TokenClient
from market.cli.common import (
    Signer,
    UserError,
    account_options,
    emit_json,
    format_tokens,
    json_option,
    network_options,
    out,
    parse_tokens,
    sends_transactions,
    step,
    table,
    wallet,
)
from market.home import Home
from market.network import DEVNET_PORT, ETHER, devnet_down, devnet_status, devnet_up


@click.group("devnet")
def devnet_group() -> None:
    """A local Anvil devnet on 127.0.0.1, with the market deployed once."""


def _status_json(status: Any) -> dict[str, Any]:
    return {
        "running": status.running,
        "url": status.url,
        "pid": status.pid,
        "kind": status.kind,
        "block": status.block,
        "marketplace": status.deployment.marketplace if status.deployment else None,
        "token": status.deployment.token if status.deployment else None,
    }


def _print_status(status: Any) -> None:
    if not status.running:
        out.print("devnet: not running (start it with `market devnet up`)")
        return
    rows = [
        ["url", status.url],
        ["pid", status.pid],
        ["kind", status.kind],
        ["block", status.block],
        ["marketplace", status.deployment.marketplace if status.deployment else "-"],
        ["token", status.deployment.token if status.deployment else "-"],
    ]
    out.print(table("devnet: running", ["", ""], rows))


@devnet_group.command("up")
@click.option("--port", default=DEVNET_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--hardhat", is_flag=True, help="Hardhat 2's node instead of Anvil.")
@json_option
def devnet_up_cmd(port: int, hardhat: bool, as_json: bool) -> None:
    """Start Anvil (or Hardhat) in the background and deploy the market (once)."""
    kind = "hardhat" if hardhat else "anvil"
    running = devnet_status(Home.default())
    if running.running and running.url is not None:
        running_port = int(running.url.rsplit(":", 1)[1])
        if (running.kind or "anvil", running_port) != (kind, port):
            raise UserError(
                f"a devnet is already running at {running.url} ({running.kind}, port "
                f"{running_port}), not {kind} on port {port}: `market devnet down` first, or "
                "use it as it is (--network devnet)"
            )
    with step(f"starting {kind} and deploying the market"):
        status = devnet_up(Home.default(), port, kind=kind)
    if as_json:
        emit_json(_status_json(status))
    else:
        _print_status(status)
        out.print("use it with --network devnet, or --rpc-url " + str(status.url))


@devnet_group.command("down")
@json_option
def devnet_down_cmd(as_json: bool) -> None:
    """Stop the devnet (its chain state is discarded)."""
    stopped = devnet_down(Home.default())
    if as_json:
        emit_json({"stopped": stopped})
    else:
        out.print("devnet stopped" if stopped else "no devnet was running")


@devnet_group.command("status")
@json_option
def devnet_status_cmd(as_json: bool) -> None:
    """Whether the devnet runs, where, and where the market is."""
    status = devnet_status(Home.default())
    if as_json:
        emit_json(_status_json(status))
    else:
        _print_status(status)


def _address_of(target: str) -> str:
    """An address given as such, or the address of the alias `target`."""
    address = target if target.startswith("0x") else wallet().address(target)
    if not (address.startswith("0x") and len(address) == 42):
        raise UserError(f"{target!r} is neither an address nor an alias")
    return address


@click.command("faucet")
@click.option("--to", "to", default=None, help="Address or alias to fund (default: --account).")
@click.option("--account", "alias", envvar="MARKET_ACCOUNT", default=None, help="Alias to fund.")
@click.option("--amount", default="1000", show_default=True, help="DATA tokens to mint.")
@click.option("--ether", default=10, show_default=True, type=click.IntRange(0), help="Gas money.")
@network_options
@json_option
def faucet(
    to: str | None,
    alias: str | None,
    amount: str,
    ether: int,
    network: Callable[[], Any],
    as_json: bool,
) -> None:
    """Mint DATA tokens and gas money to an account (devnets only)."""
    sends_transactions()
    target = to or alias
    tokens = parse_tokens(amount)  # a malformed command line first (exit 2)
    if target is None:
        raise UserError("say whom to fund: --account ALIAS or --to ADDRESS")
    address = _address_of(target)
    with network() as net:
        if not net.chain.backend.is_devnet:
            raise UserError(f"{net.name} is not a devnet: there is no faucet; buy tokens instead")
        token = TokenClient(net.chain, net.deployment.token)
        with step(f"funding {address}"):
            if ether:
                current = net.chain.balance(address)
                net.chain.fund(address, current + ether * ETHER)
            if tokens:
                from eth_account import Account

                minter = Account.create()  # anyone may call the devnet faucet; it needs gas
                net.chain.fund(minter.address, ETHER)
                token.faucet(minter, address, tokens)
        balance = token.balance_of(address)
        eth = net.chain.balance(address)
    if as_json:
        emit_json({"address": address, "tokens": balance, "wei": eth})
    else:
        out.print(f"{address}: {format_tokens(balance)}, {eth / ETHER:,.4f} ETH on {net.name}")


@click.command("deploy")
@click.option("--no-faucet", is_flag=True, help="A deployment for a public network.")
@click.option("--supply", default="1000000000", show_default=True, help="DATA minted to you.")
@network_options
@account_options
@json_option
def deploy_cmd(
    no_faucet: bool, supply: str, network: Callable[[], Any], signer: Signer, as_json: bool
) -> None:
    """Deploy the market with --account as deployer, and record it for this network."""
    from market.chain.deploy import deploy_market

    initial = parse_tokens(supply, "supply")
    with network() as net:
        account = signer.unlock()
        with step("deploying DataToken and Marketplace"):
            deployment = deploy_market(
                net.chain, account, initial_supply=initial, faucet=not no_faucet
            )
        net.save_deployment(deployment)
    if as_json:
        emit_json(deployment.to_dict())
    else:
        out.print(
            f"deployed on {net.name}: Marketplace {deployment.marketplace}, "
            f"DataToken {deployment.token} ({format_tokens(initial)} to {account.address})"
        )


@click.command("balance")
@click.argument("who", required=False)
@click.option("--account", "alias", envvar="MARKET_ACCOUNT", default=None)
@network_options
@json_option
def balance(who: str | None, alias: str | None, network: Callable[[], Any], as_json: bool) -> None:
    """DATA and ETH held by an alias or address."""
    target = who or alias
    if target is None:
        raise UserError("say whose balance: an ALIAS, an ADDRESS, or --account")
    address = _address_of(target)
    with network() as net:
        tokens = TokenClient(net.chain, net.deployment.token).balance_of(address)
        wei = net.chain.balance(address)
    if as_json:
        emit_json({"address": address, "tokens": tokens, "wei": wei})
    else:
        out.print(f"{address}: {format_tokens(tokens)}, {wei / ETHER:,.4f} ETH")
