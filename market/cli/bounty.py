"""`market bounty`: buyers post bounties, follow them, take unspent budgets back and read
results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from compute.kinds import KINDS, JobKind
from compute.kinds.aggregate import AGGREGATE
from compute.proposal import ProposalError, parse_proposal
from market.chain import errors as E
from market.cli.common import (
    Net,
    Signer,
    UserError,
    account_options,
    clients,
    emit_json,
    err,
    existing_job,
    format_span,
    format_time,
    format_tokens,
    json_option,
    local_dataset,
    network_options,
    out,
    parse_deadline,
    parse_tokens,
    require_funds,
    result_document,
    step,
    table,
)
from market.cli.files import load_template, read_evaluation, read_labels
from market.cli.outcomes import bounty_outcomes
from market.cli.templates import bounty_template
from market.escrow import EscrowClient, JobState, JobView
from market.escrow.documents import DocumentError, fetch
from market.staking import StakingClient
from nodes import api
from nodes.datasets import read_table


def _job_json(view: JobView) -> dict[str, Any]:
    return {
        "job": view.job_id,
        "state": view.state.name,
        "buyer": view.buyer,
        "spec_hash": "0x" + view.spec_hash.hex(),
        "budget": view.budget,
        "fee_bps": view.fee_bps,
        "posted_at": view.posted_at,
        "deadline": view.deadline,
        "min_participants": view.min_participants,
        "quorum": view.quorum,
        "max_slash_bps": view.max_slash_bps,
        "committee_size": view.committee_size,
        "committee": list(view.committee),
        "accepted": list(view.accepted),
        "accept_by": view.accept_by,
        "result_hash": "0x" + view.result_hash.hex(),
        "payout_root": "0x" + view.payout_root.hex(),
        "unclaimed": view.unclaimed,
    }


@click.group("bounty")
def bounty_group() -> None:
    """Post bounties, follow them, take unspent budgets back, read results."""


bounty_group.add_command(bounty_template)
bounty_group.add_command(bounty_outcomes)


def _set(template: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b` in the template when `value` is given (a command-line option wins)."""
    if value is None:
        return
    *parents, last = path.split(".")
    node = template
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"the proposal's {part!r} must be an object")
    node[last] = value


@bounty_group.command("evaluation")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--classes",
    required=True,
    type=click.IntRange(2, 4096),
    help="How many classes the models predict (labels 0 .. N-1).",
)
@json_option
def bounty_evaluation(file: Path, classes: int, as_json: bool) -> None:
    """Publish the public evaluation set of an ensemble job and print its ensemble terms.

    FILE is an .npz (numpy.savez) of x_val (validation rows x features), y_val (their labels,
    0 .. N-1) and x_test (test rows x features); every array is public once published. Keep
    the test labels to yourself: they are not part of the set (other arrays in FILE are left
    out). The set goes to content-addressed storage (an IPFS node when $MARKET_IPFS_API is set,
    else $MARKET_HOME/storage) and is named by ipfs:// URI, SHA-256 and size in the terms that
    `market bounty template --kind ensemble --ensemble TERMS` puts into a proposal."""
    from pydantic import ValidationError

    from compute.kinds import EnsembleSpec
    from compute.problems import describe
    from market.storage import open_storage
    from market.storage.errors import StorageError
    from nodes.evalset import publish_evaluation

    evaluation, extra = read_evaluation(file, classes)
    try:
        evaluation.spec("ipfs://unpublished")  # the proposal's limits, before anything is stored
        spec = publish_evaluation(evaluation, open_storage())
    except ValidationError as exc:
        problems = "; ".join(f"{p}: {m}" for p, m in describe(exc, EnsembleSpec))
        raise UserError(f"{file} does not fit an ensemble proposal: {problems}") from None
    except StorageError as exc:
        raise UserError(f"cannot publish the evaluation set: {exc}") from None
    terms = spec.model_dump(mode="json")
    if extra:
        err.print(f"left out (not published): {', '.join(extra)}", highlight=False)
    if as_json:
        emit_json(terms)
        return
    out.print(
        f"published the evaluation set: {spec.validation_rows:,} validation rows, "
        f"{spec.test_rows:,} test rows, {spec.features:,} features, {spec.classes} classes, "
        f"at {spec.evaluation.uri}",
        highlight=False,
    )
    out.print(
        'its ensemble terms (the proposal\'s "ensemble"; `market bounty template --kind '
        "ensemble --ensemble TERMS` takes them as a file):",
        highlight=False,
    )
    click.echo(json.dumps(terms, indent=2))


@bounty_group.command("try")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--mock",
    "mocks",
    multiple=True,
    required=True,
    help="A dataset (id or name) whose mock rows to run on; repeat for several.",
)
@json_option
def bounty_try(spec: Path, mocks: tuple[str, ...], as_json: bool) -> None:
    """Run SPEC's map and reduce on datasets' mock data, here and in the clear, before
    spending a budget (Mock/Real: the same code runs on the real data at the providers)."""
    import numpy as np

    from compute.maps import MapError, run_map

    template = load_template(spec)
    template.setdefault("economics", {}).setdefault("budget", 1)
    template.setdefault("deadline", 1)
    template.setdefault("committee_size", 3)
    template.setdefault("quorum", template["committee_size"] // 2 + 1)
    try:
        proposal = parse_proposal(template)
    except ProposalError as exc:
        raise UserError(f"the proposal is not valid: {exc}") from None
    if proposal.job_kind.dataset != "table":
        raise UserError(
            f"`bounty try` runs a map on tables' mock rows; a {proposal.kind} job's providers "
            f"hold a {proposal.job_kind.dataset} each, with none to run on"
        )
    reduction = proposal.reduction()
    total = np.zeros(reduction.length, dtype=np.int64)
    rows = []
    for name in mocks:
        local = local_dataset(name)
        if local.model is not None:
            raise UserError(f"{local.name} is a model: models have no mock data")
        try:
            records, report = run_map(proposal, read_table(local.mock_path))
        except MapError as exc:
            raise UserError(f"{local.name}: {exc}") from None
        total += reduction.contribution(records)
        rows.append({"dataset": local.name, "rows_used": report.rows_used,
                     "values_clipped": report.values_clipped})  # fmt: skip
    values = [float(v) for v in reduction.finish(total)]
    if as_json:
        emit_json({"op": str(reduction.op), "values": values, "datasets": rows})
        return
    listing = [[r["dataset"], r["rows_used"], r["values_clipped"]] for r in rows]
    out.print(table("Mock run", ["dataset", "rows used", "values clipped"], listing))
    out.print(f"{reduction.op} over the mock data: {', '.join(f'{v:.6g}' for v in values)}")


@bounty_group.command("post")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--budget", default=None, help="DATA escrowed for the job, e.g. 500.")
@click.option("--deadline", default=None, help="When submissions close: 2h, 3d, or a time.")
@click.option("--fee-bps", default=None, type=click.IntRange(0, 5_000), help="Default 1000.")
@click.option("--min-participants", default=None, type=click.IntRange(1))
@click.option(
    "--committee-size",
    default=None,
    type=click.IntRange(1, 16),
    help="Heavy nodes the contract draws for the job (default 3; nobody picks them).",
)
@click.option("--quorum", default=None, type=click.IntRange(1), help="Default: a majority.")
@click.option("--max-slash-bps", default=None, type=click.IntRange(0, 10_000))
@click.option("--no-permit", is_flag=True, help="Approve in a separate transaction.")
@network_options
@account_options
@json_option
def bounty_post(
    spec: Path,
    budget: str | None,
    deadline: str | None,
    fee_bps: int | None,
    min_participants: int | None,
    committee_size: int | None,
    quorum: int | None,
    max_slash_bps: int | None,
    no_permit: bool,
    network: Net,
    signer: Signer,
    as_json: bool,
) -> None:
    """Escrow a budget for the computation proposal in SPEC (a JSON file, e.g. from
    `market bounty template`). Options fill in or override the proposal's fields; the final
    proposal is validated, stored by its content address, and its hash posted as specHash."""
    template = load_template(spec)
    if budget is not None:
        _set(template, "economics.budget", parse_tokens(budget, "budget"))
    _set(template, "economics.fee_bps", fee_bps)
    _set(template, "economics.max_slash_bps", max_slash_bps)
    _set(template, "privacy.min_participants", min_participants)
    economics = template.get("economics")
    if isinstance(economics, dict):
        economics.setdefault("fee_bps", 1_000)
        economics.setdefault("max_slash_bps", 0)
    with network() as net:
        escrow, staking, token = clients(net)
        if deadline is not None:
            template["deadline"] = parse_deadline(deadline, net.chain.clock())
        _set(template, "committee_size", committee_size)
        template.setdefault("committee_size", 3)
        _set(template, "quorum", quorum)
        if isinstance(template["committee_size"], int):
            template.setdefault("quorum", template["committee_size"] // 2 + 1)
        try:
            proposal = parse_proposal(template)
        except ProposalError as exc:
            raise UserError(f"the proposal is not valid: {exc}") from None
        _check_deadline(proposal.deadline, net)
        amount = proposal.economics.budget
        require_funds(token, signer.address, amount, "the budget")
        from market.storage import StorageError, open_storage, uri_for
        from nodes.jobs import job_params

        account = signer.unlock()
        available = [a for a in escrow.registry() if a != signer.address]
        if len(available) < proposal.committee_size:
            raise UserError(
                f"the bounty needs a committee of {proposal.committee_size} drawn from "
                f"{len(available)} active heavy nodes (besides your own); use a smaller "
                "--committee-size or wait for more to register (`market heavy list`)"
            )
        try:  # by content address: every node checks what it fetches against it
            spec_uri = uri_for(open_storage().put(proposal.canonical_bytes()))
        except StorageError as exc:
            raise UserError(f"cannot publish the proposal: {exc}") from None
        params = job_params(proposal, spec_uri)
        with step("escrowing the budget and posting the job"):
            job_id = escrow.post_job(account, params, use_permit=not no_permit)
        with step("drawing the committee"):
            try:
                escrow.draw_committee(account, job_id)
            except E.ContractRevert as exc:  # any heavy node draws it on its next look
                err.print(f"the committee is drawn later by the heavy nodes ({exc})")
        view = escrow.job(job_id)
    if as_json:
        emit_json({**_job_json(view), "spec_uri": params.spec_uri})
    else:
        out.print(
            f"posted job {job_id}: {format_tokens(amount)} escrowed, submissions close "
            f"{format_time(view.deadline)}, drawn committee "
            f"{', '.join(view.committee) or '(not yet drawn)'}; members accept by "
            f"{format_time(view.accept_by)}"
        )
    late, after = proposal.job_kind.late_input, proposal.job_kind.late_after(proposal)
    if late is not None and after is not None and after <= view.posted_at:  # due now (a query)
        from market.cli.progress import LATE_COMMANDS

        what = LATE_COMMANDS.get(late.name, f"the buyer's {late.name}").format(job=job_id)
        (err if as_json else out).print(
            f"next: send the committee {what} with --account {signer.alias}; without it the "
            "committee aborts the job and refunds you",
            highlight=False,
            soft_wrap=True,
        )


def _check_deadline(deadline: int, net: Any) -> None:
    """The contract takes a deadline after the posting block and within its maximum job
    window of it; both are checked against the time the posting block will have."""
    now = net.chain.clock()
    window = net.deployment.config.max_job_window
    if deadline <= now:
        raise UserError(
            f"the deadline {format_time(deadline)} is in the past (it is {format_time(now)}); "
            "give a later --deadline, such as 30m"
        )
    if deadline > now + window:
        raise UserError(
            f"the deadline {format_time(deadline)} is beyond this market's maximum job window "
            f"of {format_span(window)} (the latest is {format_time(now + window)}); give an "
            "earlier --deadline"
        )


@bounty_group.command("list")
@click.option("--mine", is_flag=True, help="Only the jobs of --account.")
@click.option("--account", "alias", envvar="MARKET_ACCOUNT", default=None)
@network_options
@json_option
def bounty_list(mine: bool, alias: str | None, network: Net, as_json: bool) -> None:
    """Every job on the market, newest last."""
    buyer = None
    if mine:
        if alias is None:
            raise UserError("--mine needs --account ALIAS")
        buyer = Signer(alias, None).address
    with network() as net:
        escrow, _, _ = clients(net)
        views = escrow.jobs(buyer)
    if as_json:
        emit_json([_job_json(v) for v in views])
        return
    if not views:
        out.print(
            "no jobs yet: post one with `market bounty post SPEC --budget ... --deadline ...`"
        )
        return
    rows = [
        [v.job_id, v.state.name, v.buyer, format_tokens(v.budget), format_time(v.deadline)]
        for v in views
    ]
    out.print(table("Jobs", ["job", "state", "buyer", "budget", "deadline"], rows))


@bounty_group.command("show")
@click.argument("job_id", type=int)
@network_options
@json_option
def bounty_show(job_id: int, network: Net, as_json: bool) -> None:
    """Everything the chain knows about JOB_ID."""
    with network() as net:
        escrow, _, _ = clients(net)
        view = existing_job(escrow, job_id)
        abort = _abort_info(escrow, net, view)
    data = _job_json(view)
    if abort is not None:
        data["abort"] = abort
    if as_json:
        emit_json(data)
        return
    if abort is not None:
        data["abort"] = _abort_text(abort)
    data["budget"] = format_tokens(view.budget)
    data["unclaimed"] = format_tokens(view.unclaimed)
    data["posted_at"] = format_time(view.posted_at)
    data["deadline"] = format_time(view.deadline)
    data["committee"] = "\n".join(view.committee)
    out.print(table(f"Job {job_id}", ["field", "value"], [[k, v] for k, v in data.items()]))


@bounty_group.command("wait")
@click.argument("job_id", type=int)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait at most.")
@click.option(
    "--poll", default=2.0, show_default=True, type=click.FloatRange(min=0.05),
    help="Seconds between looks at the job.",
)  # fmt: skip
@network_options
@json_option
def bounty_wait(job_id: int, timeout: float, poll: float, network: Net, as_json: bool) -> None:
    """Wait until JOB_ID is settled (finalized, aborted or expired); exit 1 on timeout.

    Says on stderr each stage the job reaches (accepted by its committee, submissions closed,
    waiting for a buyer's late input such as a valuation's query shares, settling, settled), and
    the current one again once a minute; stdout has only the final state."""
    import time

    import requests

    from market.cli.progress import Progress, stage

    progress = Progress(lambda line: click.echo(line, err=True))
    http = requests.Session()
    with network() as net:
        escrow, staking, _ = clients(net)
        view = existing_job(escrow, job_id)
        end = time.monotonic() + timeout
        endpoints: list[str] = []
        while True:
            if view.drawn and not endpoints:
                endpoints = [staking.heavy_node(m).endpoint for m in view.committee]
            progress.update(stage(view, net.chain.clock(), endpoints, http))
            if view.state is not JobState.POSTED or time.monotonic() >= end:
                break
            time.sleep(poll)
            view = escrow.job(job_id)
    if view.state is JobState.POSTED:
        raise UserError(f"job {job_id} is still open after {timeout:.0f} s")
    if as_json:
        emit_json(_job_json(view))
    else:
        out.print(f"job {job_id}: {view.state.name.lower()}")


@bounty_group.command("cancel")
@click.argument("job_id", type=int)
@network_options
@account_options
@json_option
def bounty_cancel(job_id: int, network: Net, signer: Signer, as_json: bool) -> None:
    """Take back the whole budget of a job its committee never settled.

    Possible once the job's acceptance window is over without a quorum of its drawn committee
    having accepted, or else once its settlement window (deadline + grace) is over; before that
    only the committee can end the job (finalize or abort), because providers may already have
    computed for it."""
    with network() as net:
        escrow, _, _ = clients(net)
        view = existing_job(escrow, job_id)
        if view.state is not JobState.POSTED:
            raise UserError(f"job {job_id} is already {view.state.name.lower()}; nothing to cancel")
        grace = net.deployment.config.settlement_grace
        staffed = len(view.accepted) >= view.quorum  # else the contract refunds after acceptance
        opens = (view.deadline + grace if staffed else view.accept_by) + 1
        if net.chain.clock() < opens:
            raise UserError(
                f"job {job_id} can still be settled by its committee; it can be cancelled from "
                f"{format_time(opens)}"
            )
        account = signer.unlock()
        with step("expiring the job"):
            escrow.expire(account, job_id)
        view = escrow.job(job_id)
    if as_json:
        emit_json(_job_json(view))
    else:
        out.print(f"job {job_id} expired: {format_tokens(view.budget)} refunded to {view.buyer}")


@bounty_group.command("result")
@click.argument("job_id", type=int)
@click.option(
    "--test-labels",
    "test_labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="An ensemble job: your test rows' labels (an .npz holding y_test, or a text/CSV file "
    "of one label per line), read here and never sent; shows the released ensemble's test "
    "accuracy beside the models' validation accuracy.",
)
@network_options
@json_option
def bounty_result(job_id: int, test_labels: Path | None, network: Net, as_json: bool) -> None:
    """The settled result of JOB_ID, checked against its on-chain hash."""
    labels = None if test_labels is None else read_labels(test_labels)
    with network() as net:
        escrow, staking, _ = clients(net)
        view = existing_job(escrow, job_id)
        if view.state is JobState.ABORTED:
            abort = _abort_info(escrow, net, view)
            why = "" if abort is None else f" ({_abort_text(abort)})"
            raise UserError(f"job {job_id} was aborted{why}: it has no result")
        if view.state is not JobState.FINALIZED:
            raise UserError(f"job {job_id} is {view.state.name.lower()}: it has no result")
        event = escrow.finalized_event(job_id)
        assert event is not None
        document = result_document(staking, view, event["resultURI"])
        kind_of = _proposal_kind(escrow, view)
    summary = {
        "job": job_id,
        "result_uri": event["resultURI"],
        "result": document.result,
        "participants": event["participants"],
        "fee": event["fee"],
        "refund": event["refund"],
        "claimable": event["claimable"],
    }
    clipping = _clipping(document.result)
    summary["clipped"] = None if clipping is None else clipping[0]
    result = document.result
    ensemble = result.get("ensemble") if isinstance(result, dict) else None
    if labels is not None:
        if not isinstance(ensemble, dict):
            raise UserError(f"job {job_id} is not an ensemble job; --test-labels is for those")
        summary["accuracy"] = _ensemble_accuracy(result, labels)
    if as_json:
        emit_json(summary)
        return
    out.print(
        f"job {job_id} result ({event['participants']} participants), from {event['resultURI']}"
    )
    shown = {**result, "accuracy": summary["accuracy"]} if "accuracy" in summary else result
    lines = _result_kind(result, kind_of).describe(shown) if isinstance(result, dict) else []
    if not lines and isinstance(result, dict) and isinstance(result.get("valuation"), dict):
        from market.cli.valuation_cmds import result_lines  # the valuation committee's totals

        lines = result_lines(result["valuation"])
    for line in lines:  # the kind's own lines (result_kind), else the document as JSON
        out.print(line, highlight=False, markup=False)
    if not lines:
        out.print_json(json.dumps(result))
    if clipping is not None:
        clipped, lo, hi = clipping
        noisy = isinstance(result, dict) and result.get("privacy") is not None
        out.print(
            f"{clipped:,} value{'' if clipped == 1 else 's'} outside [{lo:g}, {hi:g}] "
            f"{'was' if clipped == 1 else 'were'} clipped"
            + (" (a count with DP noise in it, like the values)" if noisy else ""),
            highlight=False,
        )
    out.print(
        f"fee {format_tokens(event['fee'])}, payouts {format_tokens(event['claimable'])}, "
        f"refund {format_tokens(event['refund'])}"
    )


def _abort_info(escrow: EscrowClient, net: Any, view: JobView) -> dict[str, Any] | None:
    """Why the committee aborted the job (its `JobAborted` reason) and, for too few
    participants, how many datasets reached a committee member (its `/jobs/N` status, if one
    answers; None otherwise) against the proposal's `privacy.min_participants`."""
    if view.state is not JobState.ABORTED:
        return None
    event = escrow.aborted_event(view.job_id)
    if event is None:
        return None
    info: dict[str, Any] = {"reason": event["reason"], "refund": event["refund"]}
    if event["reason"] == "too_few_participants":
        info["needed"] = view.min_participants
        info["submitted"] = None
        staking = StakingClient(net.chain, net.deployment)
        endpoints = [staking.heavy_node(member).endpoint for member in view.committee]
        try:
            status = json.loads(fetch("committee:" + api.job(view.job_id), endpoints, timeout=5))
            info["submitted"] = int(status["submissions"])
        except (DocumentError, ValueError, KeyError, TypeError):
            pass  # no member answers: say what the chain knows
    return info


def _abort_text(info: dict[str, Any]) -> str:
    if info["reason"] != "too_few_participants":
        return f"reason {info['reason']}"
    came = info["submitted"]
    needed = info["needed"]
    reached = (
        "the committee did not say how many datasets reached it"
        if came is None
        else f"{came} dataset{'' if came == 1 else 's'} reached the committee"
    )
    return (
        f"too few participants: {reached}, the proposal needs {needed} (privacy.min_participants)"
    )


def _clipping(result: Any) -> tuple[int, float, float] | None:
    """From a result document: how many values fell outside the proposal's bounds (over all
    participants, counted under sharing) and those bounds; None when the op clips nothing."""
    if not isinstance(result, dict):
        return None
    clipped, bounds = result.get("clipped"), result.get("clip_bounds")
    if isinstance(clipped, bool) or not isinstance(clipped, int) or not isinstance(bounds, dict):
        return None
    lo, hi = bounds.get("lo"), bounds.get("hi")
    if not all(isinstance(b, int | float) and not isinstance(b, bool) for b in (lo, hi)):
        return None
    return clipped, float(lo), float(hi)


def _ensemble_accuracy(result: dict[str, Any], labels: Any) -> dict[str, Any]:
    """The released ensemble's accuracy on the buyer's own test labels, beside what the
    committee released about each model: its validation accuracy and weight. (No model's own
    test outputs are released, so neither is its test accuracy.)"""
    import numpy as np

    ensemble = result["ensemble"]
    classes, rows = ensemble.get("classes"), ensemble.get("test_rows")
    values = np.asarray(result.get("values") or [], dtype=np.float64)
    if labels.size != rows:
        raise UserError(f"--test-labels has {labels.size} labels; the job has {rows} test rows")
    if labels.min() < 0 or labels.max() >= classes:
        raise UserError(f"--test-labels must be labels 0 .. {classes - 1}")
    predicted = values.reshape(rows, classes).argmax(axis=1)
    weights = {d: float(w) for d, w in (ensemble.get("weights") or {}).items()}
    validation = ensemble.get("validation_accuracy") or {}
    chosen = [d for d, w in weights.items() if w == 1.0]
    released = float(validation[chosen[0]]) if len(chosen) == 1 else None
    candidates, picked = ensemble.get("candidates"), ensemble.get("chosen")
    if candidates and isinstance(picked, int) and 0 <= picked < len(candidates):
        released = float(candidates[picked]["validation_accuracy"])  # a blend has its own
    return {
        "test_labels": int(labels.size),
        "ensemble_test": float((predicted == labels).mean()),
        "ensemble_validation": released,
        "best_model_validation": max(validation.values()) if validation else None,
        "models_validation": validation,
    }


def _proposal_kind(escrow: EscrowClient, view: JobView) -> str | None:
    """The kind of the job's proposal (result_kind), or None when it cannot be read."""
    from nodes.jobs import JobSpecError, proposal_for

    try:
        return proposal_for(escrow, view).kind
    except JobSpecError:
        return None


def _result_kind(result: dict[str, Any], proposal_kind: str | None) -> JobKind:
    """The kind whose `describe` shows a result (result_kind): the one the result document
    records, else the proposal's, else the one whose part the document holds (a document
    written before results recorded their kind, of a job whose proposal cannot be read)."""
    named = result.get("kind") if isinstance(result.get("kind"), str) else proposal_kind
    if named in KINDS:
        return KINDS[named]
    return next((k for k in KINDS.values() if isinstance(result.get(k.name), dict)), AGGREGATE)
