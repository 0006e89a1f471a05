"""`market bounty outcomes JOB FILE`: the buyer posts a job's late input (a forecast's outcomes),
signed with its wallet, to every member of the job's committee (`nodes.late`)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import click

from market.cli.common import (
    Net,
    Signer,
    UserError,
    account_options,
    emit_json,
    existing_job,
    format_time,
    json_option,
    network_options,
    out,
    step,
)


def read_outcomes(path: Path) -> list[float]:
    """T numbers from a JSON file (a list, or {"values": [...]}) or a CSV file (one number a
    line, or the column `outcome` or `value` of a table with a header), in target order."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
        values = data.get("values") if isinstance(data, dict) else data
        if not isinstance(values, list):
            raise UserError(f'{path} must hold a list of numbers, or {{"values": [...]}}')
    else:
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        if rows and rows[0] and not _number(rows[0][0]):
            header = [c.strip().lower() for c in rows[0]]
            column = next((header.index(n) for n in ("outcome", "value") if n in header), None)
            if column is None:
                raise UserError(f"{path}: name the outcomes' column `outcome` or `value`")
            values = [r[column] if column < len(r) else "" for r in rows[1:]]
        else:
            values = [r[0] for r in rows]
    out_values: list[float] = []
    for line, value in enumerate(values, start=1):
        number = _number(value)
        if number is None or not math.isfinite(number):
            raise UserError(f"{path}: outcome {line} ({value!r}) is not a finite number")
        out_values.append(number)
    return out_values


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@click.command("outcomes")
@click.argument("job_id", type=click.IntRange(1))
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@network_options
@account_options
@json_option
def bounty_outcomes(job_id: int, file: Path, network: Net, signer: Signer, as_json: bool) -> None:
    """Post a forecast job's outcomes to its committee.

    FILE holds the T outcomes in target order: JSON (a list of numbers, or {"values": [...]})
    or CSV (one number a line, or a column named outcome or value). They are signed by
    --account, which must be the job's buyer, and taken from the job's resolution time on."""
    from market.escrow import EscrowClient, JobState
    from market.staking import StakingClient
    from nodes.jobs import JobSpecError, proposal_for
    from nodes.late import LateInputError
    from nodes.late import post as post_late

    values = read_outcomes(file)
    with network() as net:
        escrow = EscrowClient(net.chain, net.deployment)
        staking = StakingClient(net.chain, net.deployment)
        view = existing_job(escrow, job_id)
        if view.state is not JobState.POSTED:
            raise UserError(f"job {job_id} is already {view.state.name.lower()}; outcomes are "
                            "too late")  # fmt: skip
        if signer.address.lower() != view.buyer.lower():
            raise UserError(
                f"job {job_id} was posted by {view.buyer}, and --account {signer.alias} is "
                f"{signer.address}: only the job's buyer can post its outcomes"
            )
        try:
            proposal = proposal_for(escrow, view)
        except JobSpecError as exc:
            raise UserError(str(exc)) from None
        kind = proposal.job_kind
        after = kind.late_after(proposal)
        if kind.late_input is None or after is None:
            raise UserError(f"job {job_id} is a {proposal.kind} job: it takes no outcomes")
        targets = proposal.reduction().width
        if len(values) != targets:
            raise UserError(f"{file} holds {len(values)} outcomes; job {job_id} has "
                            f"{targets} targets: give one per target, in order")  # fmt: skip
        now = net.chain.clock()
        if now < after:
            raise UserError(f"job {job_id}'s outcomes are taken from {format_time(after)} (its "
                            "resolution time); post them then")  # fmt: skip
        value = {"job_id": job_id, "values": values}
        endpoints = [staking.heavy_node(m).endpoint for m in view.committee]
        account = signer.unlock()
        try:
            with step(f"posting {len(values)} outcomes of job {job_id}"):
                failed = post_late(account, job_id, kind.late_input.name, value, endpoints)
        except LateInputError as exc:
            raise UserError(str(exc)) from None
    members = list(view.committee)
    taken = [m for i, m in enumerate(members, start=1) if i not in failed]
    refused = {members[i - 1]: reason for i, reason in failed.items()}
    if as_json:
        emit_json({"job": job_id, "outcomes": len(values), "accepted_by": taken,
                   "refused_by": refused})  # fmt: skip
        return
    out.print(
        f"job {job_id}: {len(values)} outcomes taken by {len(taken)} of {len(members)} "
        "committee members; they settle once every member holds them",
        highlight=False,
    )
    for member, reason in refused.items():
        out.print(f"  refused by {member}: {reason}", highlight=False)
