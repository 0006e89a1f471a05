"""`market claim`: providers claim every payout their jobs' published payout trees owe
them."""

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
    existing_job,
    format_tokens,
    json_option,
    network_options,
    out,
    result_document,
    step,
)
from market.escrow import JobState, JobView
from market.valuation.merkle import PayoutTree


@click.command("claim")
@click.option("--job", "job_ids", type=int, multiple=True, help="Only these jobs.")
@network_options
@account_options
@json_option
def claim(job_ids: tuple[int, ...], network: Net, signer: Signer, as_json: bool) -> None:
    """Claim every payout the account is owed (from each job's published payout tree)."""
    claimed: list[dict[str, Any]] = []
    with network() as net:
        escrow, staking, token = clients(net)
        me = signer.address
        views = [existing_job(escrow, j) for j in job_ids] if job_ids else escrow.jobs()
        owed: list[tuple[JobView, PayoutTree]] = []
        for view in views:
            if view.state is not JobState.FINALIZED or view.payout_root == bytes(32):
                continue
            event = escrow.finalized_event(view.job_id)
            assert event is not None
            tree = result_document(staking, view, event["resultURI"]).payouts
            if tree is None or tree.root != view.payout_root:
                raise UserError(
                    f"job {view.job_id}'s published payout tree does not match its root"
                )
            if me in tree and not escrow.is_claimed(view.job_id, me, tree.amount(me)):
                owed.append((view, tree))
        if owed:
            account = signer.unlock()
        for view, tree in owed:
            amount = tree.amount(me)
            with step(f"claiming {format_tokens(amount)} from job {view.job_id}"):
                escrow.claim(account, view.job_id, me, amount, tree.proof(me))
            claimed.append({"job": view.job_id, "amount": amount})
        balance = token.balance_of(me)
    if as_json:
        emit_json({"account": me, "claimed": claimed, "balance": balance})
    elif not claimed:
        out.print(f"nothing to claim for {me}")
    else:
        for c in claimed:
            out.print(f"claimed {format_tokens(c['amount'])} from job {c['job']}")
        out.print(f"balance: {format_tokens(balance)}")
