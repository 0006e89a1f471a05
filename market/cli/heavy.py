"""`market heavy`: heavy-node operators register, follow their jobs and fees, and take their
stake back."""

from __future__ import annotations

from typing import Any

import click

from market.cli.common import (
    Net,
    Signer,
    UserError,
    account_options,
    clients,
    emit_json,
    format_time,
    format_tokens,
    json_option,
    network_options,
    out,
    parse_tokens,
    received,
    require_funds,
    step,
    table,
)
from market.keys import box_public_key
from market.staking.client import HeavyNodeRecord
from market.staking.rules import unlock_at


@click.group("heavy")
def heavy_group() -> None:
    """Register a heavy node, follow its jobs and fees, take its stake back."""


def _node_json(record: HeavyNodeRecord, active: bool) -> dict[str, Any]:
    return {
        "node": record.address,
        "registered": record.registered,
        "active": active,
        "stake": record.stake,
        "endpoint": record.endpoint,
        "encryption_key": "0x" + record.encryption_key.hex(),
        "fees_earned": record.fees_earned,
        "unbonding_since": record.unstake_requested_at,
    }


@heavy_group.command("register")
@click.option("--endpoint", required=True, help="The node's public HTTP URL.")
@click.option("--stake", "stake", required=True, help="DATA to stake, e.g. 1000.")
@network_options
@account_options
@json_option
def heavy_register(endpoint: str, stake: str, network: Net, signer: Signer, as_json: bool) -> None:
    """Register --account as a heavy node serving at --endpoint."""
    from nodes.wire import WireError, node_endpoint

    try:
        endpoint = node_endpoint(endpoint)
    except WireError as exc:
        raise UserError(f"--endpoint: {exc}") from None
    tokens = parse_tokens(stake)
    with network() as net:
        _, staking, token = clients(net)
        minimum = net.deployment.config.min_heavy_node_stake
        if tokens < minimum:
            raise UserError(f"the minimum heavy-node stake is {format_tokens(minimum)}")
        if staking.heavy_node(signer.address).registered:
            raise UserError(
                f"{signer.address} is already a registered heavy node; see `market heavy status "
                f"--account {signer.alias}`"
            )
        require_funds(token, signer.address, tokens, "the stake")
        account = signer.unlock()
        with step("registering"):
            staking.register_heavy_node(account, tokens, endpoint, box_public_key(account))
        record = staking.heavy_node(account.address)
        active = staking.is_active_heavy_node(account.address)
    if as_json:
        emit_json(_node_json(record, active))
    else:
        out.print(
            f"registered heavy node {record.address} at {endpoint}, "
            f"stake {format_tokens(record.stake)}"
        )


@heavy_group.command("status")
@click.option("--account", "alias", envvar="MARKET_ACCOUNT", required=True)
@network_options
@json_option
def heavy_status(alias: str, network: Net, as_json: bool) -> None:
    """Stake, jobs served and fees earned by the heavy node --account."""
    address = Signer(alias, None).address
    with network() as net:
        escrow, staking, _ = clients(net)
        record = staking.heavy_node(address)
        if not record.registered:
            raise UserError(f"{address} is not a registered heavy node (`market heavy register`)")
        active = staking.is_active_heavy_node(address)
        served = [v for v in escrow.jobs() if address in v.committee]
        fees = escrow.fees_paid(address)
    data = _node_json(record, active)
    data["jobs"] = [{"job": v.job_id, "state": v.state.name} for v in served]
    data["fees"] = [{"job": int(f["jobId"]), "amount": int(f["amount"])} for f in fees]
    if as_json:
        emit_json(data)
        return
    state = "active" if active else ("unbonding" if record.unstake_requested_at else "inactive")
    out.print(
        f"heavy node {address} ({state}) at {record.endpoint}: stake {format_tokens(record.stake)},"
        f" fees earned {format_tokens(record.fees_earned)}"
    )
    if served:
        out.print(
            table(
                "Jobs served",
                ["job", "state", "fee"],
                [
                    [
                        v.job_id,
                        v.state.name,
                        format_tokens(
                            sum(f["amount"] for f in data["fees"] if f["job"] == v.job_id)
                        ),
                    ]
                    for v in served
                ],
            )
        )


@heavy_group.command("list")
@network_options
@json_option
def heavy_list(network: Net, as_json: bool) -> None:
    """Every registered heavy node."""
    with network() as net:
        _, staking, _ = clients(net)
        nodes = [(r, staking.is_active_heavy_node(r.address)) for r in staking.heavy_nodes()]
    if as_json:
        emit_json([_node_json(r, a) for r, a in nodes])
        return
    out.print(
        table(
            "Heavy nodes",
            ["node", "active", "stake", "endpoint"],
            [
                [r.address, "yes" if a else "no", format_tokens(r.stake), r.endpoint]
                for r, a in nodes
            ],
        )
    )


@heavy_group.command("unstake")
@network_options
@account_options
@json_option
def heavy_unstake(network: Net, signer: Signer, as_json: bool) -> None:
    """Leave every future committee and start unbonding the stake."""
    with network() as net:
        _, staking, _ = clients(net)
        account = signer.unlock()
        with step("requesting the unstake"):
            staking.request_heavy_node_unstake(account)
        record = staking.heavy_node(account.address)
        unlock = unlock_at(record.unstake_requested_at, net.deployment.config.unbonding_period)
    if as_json:
        emit_json({"node": account.address, "unlock_at": unlock})
    else:
        out.print(f"{account.address} is unbonding; withdraw from {format_time(unlock)}")


@heavy_group.command("withdraw")
@network_options
@account_options
@json_option
def heavy_withdraw(network: Net, signer: Signer, as_json: bool) -> None:
    """Take the stake back once the unbonding period is over."""
    with network() as net:
        _, staking, token = clients(net)
        account = signer.unlock()
        got = received(token, account.address, lambda: staking.withdraw_heavy_node(account))
    if as_json:
        emit_json({"node": account.address, "withdrawn": got})
    else:
        out.print(f"withdrew {format_tokens(got)}")
