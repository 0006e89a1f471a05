"""The three roles' commands: `market bounty` (buyers), `market dataset` and `market claim`
(providers), `market heavy` (heavy-node operators)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from compute.proposal import ProposalError, parse_proposal
from market.chain import errors as E
from market.chain.token import TokenClient
from market.cli.common import (
    Signer,
    UserError,
    account_options,
    emit_json,
    err,
    format_span,
    format_time,
    format_tokens,
    json_option,
    network_options,
    out,
    parse_deadline,
    parse_tokens,
    step,
    table,
)
from market.escrow import EscrowClient, JobState, JobView
from market.escrow.documents import DocumentError, ResultDocument, fetch
from market.home import Home
from market.keys import box_public_key
from market.staking import StakingClient
from market.staking.client import HeavyNodeRecord
from market.staking.rules import unlock_at
from market.valuation.merkle import PayoutTree
from nodes.datasets import LocalDataset, read_table, register_dataset, registered_datasets

Net = Callable[[], Any]


def _clients(net: Any) -> tuple[EscrowClient, StakingClient, TokenClient]:
    deployment = net.deployment
    return (
        EscrowClient(net.chain, deployment),
        StakingClient(net.chain, deployment),
        TokenClient(net.chain, deployment.token),
    )


def _require_funds(token: TokenClient, address: str, amount: int, what: str) -> None:
    held = token.balance_of(address)
    if held < amount:
        raise UserError(
            f"{what} of {format_tokens(amount)} is more than the {format_tokens(held)} that "
            f"{address} holds; get more DATA (`market faucet` on a devnet) or ask for less"
        )


def _received(token: TokenClient, address: str, withdraw: Callable[[], object]) -> int:
    """Run a withdrawal and return how many tokens it paid `address`."""
    before = token.balance_of(address)
    with step("withdrawing"):
        withdraw()
    return token.balance_of(address) - before


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


def existing_job(escrow: EscrowClient, job_id: int) -> JobView:
    """The job, or a `UserError` saying there is none."""
    try:
        view = escrow.job(job_id)
    except E.MarketplaceJobNotFound:
        view = None
    if view is None or view.state is JobState.NONE:
        raise UserError(f"there is no job {job_id} (`market bounty list` shows the jobs)")
    return view


# ------------------------------------------------------------------------------------ bounty
@click.group("bounty")
def bounty_group() -> None:
    """Post bounties, follow them, take unspent budgets back, read results."""


def _load_template(spec: Path) -> dict[str, Any]:
    try:
        template = json.loads(spec.read_bytes())
    except ValueError as exc:
        raise UserError(f"{spec} is not JSON ({exc}); a proposal is a JSON document") from None
    if not isinstance(template, dict):
        raise UserError(f"{spec} must hold a JSON object (a proposal)")
    return template


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


_AGGREGATE_ONLY = {
    "columns": "--column",
    "op": "--op",
    "lo": "--lo",
    "hi": "--hi",
    "bins": "--bins",
}
"""Template options that shape an aggregate's map and reduce (an ensemble's are fixed)."""


@bounty_group.command("template")
@click.option(
    "--kind",
    type=click.Choice(["aggregate", "ensemble"]),
    default="aggregate",
    show_default=True,
    help="A statistic over providers' tables, or a weighted ensemble of providers' models "
    "(needs --ensemble).",
)
@click.option("--column", "columns", multiple=True, default=("value",), show_default=True)
@click.option(
    "--op",
    type=click.Choice(["sum", "count", "mean", "variance", "histogram"]),
    default="mean",
    show_default=True,
)
@click.option("--lo", type=float, default=0.0, show_default=True, help="Lowest value kept.")
@click.option("--hi", type=float, default=1000.0, show_default=True, help="Highest value kept.")
@click.option("--bins", type=int, default=None, help="Histogram bins.")
@click.option(
    "--ensemble",
    "ensemble_terms",
    type=click.File("rb"),
    default=None,
    help="The ensemble terms JSON that `market bounty evaluation FILE.npz --classes N --json` "
    "prints (a file, or - for stdin); --kind ensemble only.",
)
@click.option("--scheme", type=click.Choice(["shamir", "additive"]), default="shamir")
@click.option("--min-participants", default=3, show_default=True, type=click.IntRange(1))
@click.option(
    "--title",
    default=None,
    help="Default: 'A statistic over providers' data' or 'A weighted ensemble of providers' "
    "models'.",
)
@click.pass_context
def bounty_template(
    ctx: click.Context,
    kind: str,
    columns: tuple[str, ...],
    op: str,
    lo: float,
    hi: float,
    bins: int | None,
    ensemble_terms: Any,
    scheme: str,
    min_participants: int,
    title: str | None,
) -> None:
    """Print a proposal to edit and post (`bounty post` fills in budget, deadline, committee).

    An ensemble proposal (--kind ensemble) names the public evaluation set that every model
    holder scores: publish it first with `market bounty evaluation`, then pass its terms."""
    threat_model = "malicious-detect" if scheme == "shamir" else "semi-honest"
    if kind == "ensemble":
        given = [
            flag
            for name, flag in _AGGREGATE_ONLY.items()
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise UserError(
                f"{', '.join(given)} apply to aggregate templates; an ensemble job's map and "
                "reduce are fixed (model_probabilities, weighted_sum)"
            )
        if ensemble_terms is None:
            raise UserError(
                "--kind ensemble needs --ensemble TERMS: publish the evaluation set with "
                "`market bounty evaluation FILE.npz --classes N --json > terms.json`, then "
                "pass --ensemble terms.json"
            )
        terms = _ensemble_terms(ensemble_terms)
        template: dict[str, Any] = {
            "version": 1,
            "kind": "ensemble",
            "title": title or "A weighted ensemble of providers' models",
            "map": {
                "function": "model_probabilities",
                "params": {},
                "output": {"fields": []},
                "filter": None,
            },
            "reduce": {
                "op": "weighted_sum",
                "scheme": scheme,
                "threshold": None,
                "threat_model": threat_model,
                "bins": None,
            },
            "privacy": {"min_participants": min_participants, "dp": None},
            "economics": {"fee_bps": 1_000, "payout_rule": "ensemble_weight", "max_slash_bps": 0},
            "ensemble": terms,
        }
        click.echo(json.dumps(template, indent=2))
        return
    if ensemble_terms is not None:
        raise UserError("--ensemble applies to --kind ensemble only")
    fields = [] if op == "count" else [{"name": c, "lo": lo, "hi": hi} for c in columns]
    template = {
        "version": 1,
        "kind": "aggregate",
        "title": title or "A statistic over providers' data",
        "map": {
            "function": "row_count" if op == "count" else "column_values",
            "params": {},
            "output": {"fields": fields},
            "filter": None,
        },
        "reduce": {
            "op": op,
            "scheme": scheme,
            "threshold": None,
            "threat_model": threat_model,
            "bins": bins,
        },  # fmt: skip
        "privacy": {"min_participants": min_participants, "dp": None},
        "economics": {"fee_bps": 1_000, "payout_rule": "equal", "max_slash_bps": 0},
    }
    click.echo(json.dumps(template, indent=2))


def _ensemble_terms(source: Any) -> dict[str, Any]:
    """The ensemble terms in `source` (a JSON object, as `bounty evaluation --json` prints
    it), checked."""
    from pydantic import ValidationError

    from compute.proposal import EnsembleSpec, describe

    name = getattr(source, "name", "--ensemble")
    shown = "stdin" if name == "<stdin>" else name
    try:
        terms = json.loads(source.read())
    except ValueError as exc:
        raise UserError(
            f"{shown} is not JSON ({exc}); pass the terms `market bounty evaluation ... --json` "
            "prints"
        ) from None
    if isinstance(terms, dict) and isinstance(terms.get("ensemble"), dict):
        terms = terms["ensemble"]  # a whole proposal, or {"ensemble": {...}}
    if not isinstance(terms, dict):
        raise UserError(f"{shown} must hold a JSON object (the ensemble terms)")
    try:
        EnsembleSpec.model_validate(terms)
    except ValidationError as exc:
        problems = "; ".join(f"{p}: {m}" for p, m in describe(exc, EnsembleSpec))
        raise UserError(f"{shown} does not hold valid ensemble terms: {problems}") from None
    return terms


_EVALUATION_ARRAYS = ("x_val", "y_val", "x_test")


def _read_evaluation(path: Path, classes: int) -> tuple[Any, list[str]]:
    """The evaluation set in the `.npz` at `path` (no pickles), checked, and the names of any
    other arrays the file holds (not published); `UserError` saying what is wrong otherwise."""
    import zipfile

    import numpy as np

    from nodes.evalset import EnsembleJobError, EvaluationSet

    layout = (
        "an evaluation set is an .npz (numpy.savez) of x_val (validation rows x features), "
        "y_val (their integer labels) and x_test (test rows x features)"
    )
    unreadable = (OSError, EOFError, zipfile.BadZipFile)
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError:  # neither .npy nor .npz: numpy would have to unpickle it
        raise UserError(f"{path} is not an .npz archive; {layout}") from None
    except unreadable as exc:
        raise UserError(f"{path} is not a readable .npz ({exc}); {layout}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise UserError(f"{path} holds a single array, not an .npz archive; {layout}")
    with loaded as npz:
        missing = [a for a in _EVALUATION_ARRAYS if a not in npz.files]
        if missing:
            held = ", ".join(npz.files) or "no arrays"
            raise UserError(f"{path} lacks {', '.join(missing)} (it holds {held}); {layout}")
        extra = sorted(set(npz.files) - set(_EVALUATION_ARRAYS))
        try:
            arrays = {a: npz[a] for a in _EVALUATION_ARRAYS}
        except ValueError:
            raise UserError(
                f"{path} holds object (pickled) arrays, which are not loaded; save plain "
                "numeric arrays"
            ) from None
        except unreadable as exc:
            raise UserError(f"{path} is not a readable .npz ({exc}); {layout}") from None
    try:
        evaluation = EvaluationSet(**arrays, classes=classes)
    except EnsembleJobError as exc:
        raise UserError(f"{path}: {exc}") from None
    return evaluation, extra


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

    from compute.proposal import EnsembleSpec, describe
    from market.storage import open_storage
    from market.storage.errors import StorageError
    from nodes.evalset import publish_evaluation

    evaluation, extra = _read_evaluation(file, classes)
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

    template = _load_template(spec)
    template.setdefault("economics", {}).setdefault("budget", 1)
    template.setdefault("deadline", 1)
    template.setdefault("committee_size", 3)
    template.setdefault("quorum", template["committee_size"] // 2 + 1)
    try:
        proposal = parse_proposal(template)
    except ProposalError as exc:
        raise UserError(f"the proposal is not valid: {exc}") from None
    if proposal.ensemble is not None:
        raise UserError(
            "`bounty try` runs a map on tables' mock rows; an ensemble job has none to run on "
            "(each model holder scores the public evaluation set with its own model)"
        )
    reduction = proposal.reduction()
    total = np.zeros(reduction.length, dtype=np.int64)
    rows = []
    for name in mocks:
        local = _local(name)
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
    template = _load_template(spec)
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
        escrow, staking, token = _clients(net)
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
        _require_funds(token, signer.address, amount, "the budget")
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
        escrow, _, _ = _clients(net)
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
        escrow, _, _ = _clients(net)
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
    for a valuation job the buyer's report and which members took it, settling, settled), and
    the current one again once a minute; stdout has only the final state."""
    import time

    import requests

    from market.cli.progress import Progress, stage

    progress = Progress(lambda line: click.echo(line, err=True))
    http = requests.Session()
    with network() as net:
        escrow, staking, _ = _clients(net)
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
        escrow, _, _ = _clients(net)
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
    labels = None if test_labels is None else _read_labels(test_labels)
    with network() as net:
        escrow, staking, _ = _clients(net)
        view = existing_job(escrow, job_id)
        if view.state is JobState.ABORTED:
            abort = _abort_info(escrow, net, view)
            why = "" if abort is None else f" ({_abort_text(abort)})"
            raise UserError(f"job {job_id} was aborted{why}: it has no result")
        if view.state is not JobState.FINALIZED:
            raise UserError(f"job {job_id} is {view.state.name.lower()}: it has no result")
        event = escrow.finalized_event(job_id)
        assert event is not None
        document = _document(staking, view, event["resultURI"])
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
    if isinstance(ensemble, dict):
        _print_ensemble(result, summary.get("accuracy"))
    else:
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
            status = json.loads(fetch(f"committee:/jobs/{view.job_id}", endpoints, timeout=5))
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


def _read_labels(path: Path) -> Any:
    """The buyer's test labels from its own file: an `.npz` with `y_test` (or one array), or
    text with one integer label per line (a CSV's one column, a header line allowed)."""
    import numpy as np

    what = f"--test-labels {path}"
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                names = list(npz.files)
                name = "y_test" if "y_test" in names else (names[0] if len(names) == 1 else None)
                if name is None:
                    raise UserError(f"{what} holds {names}; it needs a y_test array")
                labels = np.asarray(npz[name])
        else:
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            if lines and not lines[0].lstrip("-").isdigit():
                lines = lines[1:]  # a header
            if any("," in ln for ln in lines):
                raise UserError(f"{what} has more than one column; give one label per line")
            labels = np.array([int(ln) for ln in lines])
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what}: {exc}; give an .npz with y_test or one "
                        "integer label per line") from None  # fmt: skip
    if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in "iu":
        raise UserError(f"{what} must hold one integer label per test row")
    return labels


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


def _print_ensemble(result: dict[str, Any], accuracy: dict[str, Any] | None = None) -> None:
    """An ensemble's result: each model's weight and validation accuracy, and how many
    probabilities it released (not the probabilities: `--json` has them); with the buyer's
    test labels, the ensemble's test accuracy."""
    ensemble = result["ensemble"]
    weights = ensemble.get("weights") or {}
    validation = ensemble.get("validation_accuracy") or {}
    values = result.get("values") or []
    classes, test_rows = ensemble.get("classes"), ensemble.get("test_rows")
    out.print(
        f"weighted ensemble of {len(weights)} models: {classes} classes, {test_rows} test rows",
        highlight=False,
    )

    def number(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, int | float) else "-"

    rows = [
        [dataset, number(weights.get(dataset)), number(validation.get(dataset)), "-"]
        for dataset in sorted(set(weights) | set(validation))
    ]
    columns = ["dataset", "weight", "validation accuracy", "test accuracy"]
    if accuracy is None:
        columns, rows = columns[:3], [r[:3] for r in rows]
    else:
        rows.append(["ensemble (released)", "", number(accuracy["ensemble_validation"]),
                     number(accuracy["ensemble_test"])])  # fmt: skip
    out.print(table("Models", columns, rows))
    if accuracy is not None:
        best = accuracy["best_model_validation"]
        out.print(
            f"ensemble test accuracy {accuracy['ensemble_test']:.4f} on your "
            f"{accuracy['test_labels']} labels; validation accuracy: ensemble "
            f"{number(accuracy['ensemble_validation'])}, best model {number(best)} (no model's "
            "own test outputs are released)",
            highlight=False,
        )
    out.print(
        f"{len(values):,} ensemble probabilities ({test_rows} test rows x {classes} classes, "
        "row by row); --json prints them",
        highlight=False,
    )


def _document(staking: StakingClient, view: JobView, uri: str) -> ResultDocument:
    endpoints = [staking.heavy_node(member).endpoint for member in view.committee]
    try:
        return ResultDocument.from_bytes(fetch(uri, endpoints), view.result_hash)
    except DocumentError as exc:
        raise UserError(f"the job's result document at {uri}: {exc}") from None


# ------------------------------------------------------------------------------------ claim
@click.command("claim")
@click.option("--job", "job_ids", type=int, multiple=True, help="Only these jobs.")
@network_options
@account_options
@json_option
def claim(job_ids: tuple[int, ...], network: Net, signer: Signer, as_json: bool) -> None:
    """Claim every payout the account is owed (from each job's published payout tree)."""
    claimed: list[dict[str, Any]] = []
    with network() as net:
        escrow, staking, token = _clients(net)
        me = signer.address
        views = [existing_job(escrow, j) for j in job_ids] if job_ids else escrow.jobs()
        owed: list[tuple[JobView, PayoutTree]] = []
        for view in views:
            if view.state is not JobState.FINALIZED or view.payout_root == bytes(32):
                continue
            event = escrow.finalized_event(view.job_id)
            assert event is not None
            tree = _document(staking, view, event["resultURI"]).payouts
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


# ------------------------------------------------------------------------------------ dataset
@click.group("dataset")
def dataset_group() -> None:
    """Register local datasets, stake them, and take stakes back."""


def _local(dataset: str) -> LocalDataset:
    for d in registered_datasets():
        if d.dataset_id.hex() == dataset.removeprefix("0x").lower() or d.name == dataset:
            return d
    raise UserError(
        f"no registered dataset {dataset!r} (`market dataset list` shows them; "
        "`market dataset register PATH` adds one)"
    )


@dataset_group.command("register")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="A short name (default: the file name).")
@click.option(
    "--mock-rows",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Mock rows to write (tables only; a model has no mock data).",
)
@click.option(
    "--bounds",
    "bounds",
    multiple=True,
    metavar="COLUMN=LO:HI",
    help="A numeric column's declared range, e.g. bp=0:250 (published; repeat per column).",
)
@click.option(
    "--categories",
    "categories",
    multiple=True,
    metavar="COLUMN=A,B,...",
    help="A column's declared category names, e.g. sex=F,M (published; repeat per column).",
)
@click.option(
    "--reveal-bounds",
    is_flag=True,
    help="Publish the real minimum and maximum of numeric columns without --bounds "
    "(not differentially private).",
)
@click.option(
    "--mock",
    "mock_kind",
    type=click.Choice(["synthetic", "dp"]),
    default="synthetic",
    show_default=True,
    help="synthetic: from the declared schema alone; dp: sampled from differentially private "
    "marginals of the declared columns (needs --mock-epsilon).",
)
@click.option(
    "--mock-epsilon",
    type=float,
    default=None,
    help="The epsilon DP mock data spends of the dataset's privacy budget, e.g. 1.0.",
)
@json_option
def dataset_register(
    path: Path,
    name: str | None,
    mock_rows: int,
    bounds: tuple[str, ...],
    categories: tuple[str, ...],
    reveal_bounds: bool,
    mock_kind: str,
    mock_epsilon: float | None,
    as_json: bool,
) -> None:
    """Describe the CSV or Parquet file at PATH: column names and types, the bounds and
    categories you declare, and mock rows; or the model file at PATH (.joblib, .pkl, .pickle:
    a fitted scikit-learn style classifier with integer class labels, for ensemble jobs).

    What is published when you stake: the schema (names, types, declared bounds and
    categories), the row count, and the mock rows. By default the mock rows are synthetic
    from the declared schema alone (uniform over each declared range or category list, or
    over 0-1000 for an undeclared numeric column; text columns text-0, text-1, ...). With
    --mock dp they are sampled from DP histograms of the declared columns (OpenDP, at
    --mock-epsilon, charged to the dataset's budget). Example:

      market dataset register clinic.csv --bounds bp=0:250 --bounds age=0:120
      --categories sex=F,M --mock dp --mock-epsilon 1.0

    Nothing leaves this machine; `market dataset stake` puts the dataset on chain.

    Security: registering a model loads it, and unpickling runs code from the file. Register
    only your own model files (or ones you trust), never a file someone sent you."""
    from nodes.datasets import DatasetError, parse_bounds, parse_categories

    try:
        declared_bounds, declared = parse_bounds(bounds), parse_categories(categories)
    except DatasetError as exc:
        raise click.UsageError(str(exc)) from None
    if (mock_kind == "dp") != (mock_epsilon is not None):
        raise click.UsageError(
            "--mock dp needs --mock-epsilon (the privacy the mock data spends), and "
            "--mock-epsilon applies to --mock dp only"
        )
    if mock_epsilon is not None and not (0 < mock_epsilon < float("inf")):
        raise click.UsageError(f"--mock-epsilon must be positive, got {mock_epsilon:g}")
    local = register_dataset(
        path,
        name or path.stem,
        mock_rows,
        bounds=declared_bounds,
        categories=declared,
        reveal_bounds=reveal_bounds,
        mock=mock_kind,
        mock_epsilon=mock_epsilon,
    )
    if as_json:
        emit_json(local.to_json())
        return
    if local.model is not None:
        model = local.model
        out.print(f"registered model {local.name}: id 0x{local.dataset_id.hex()}")
        rows = [
            ["estimator", model.estimator],
            ["classes", ", ".join(str(c) for c in model.classes)],
            ["features", "-" if model.n_features is None else model.n_features],
            ["sha256", local.sha256],
        ]
        out.print(table("Model", ["field", "value"], rows))
        out.print("no mock data: a model serves ensemble jobs only")
        return
    out.print(f"registered {local.name}: id 0x{local.dataset_id.hex()}, {local.rows:,} rows")
    rows = [[c.name, c.kind, c.describe()] for c in local.schema]
    out.print(table("Schema", ["column", "type", "values"], rows))
    mock = local.mock_description()
    if mock["kind"] == "dp":
        out.print(
            f"mock data: {local.mock_path} (from DP marginals: epsilon {mock['epsilon']:g}, "
            f"delta {mock['delta']:g}, charged to this dataset's budget; each noisy count is "
            f"within {mock['count_error']:.3g} of the real one with probability "
            f"{mock['confidence']:g})"
        )
    else:
        out.print(f"mock data: {local.mock_path} (synthetic, from the declared schema alone)")


@dataset_group.command("stake")
@click.argument("dataset")
@click.option("--amount", required=True, help="DATA to stake, e.g. 50.")
@network_options
@account_options
@json_option
def dataset_stake(dataset: str, amount: str, network: Net, signer: Signer, as_json: bool) -> None:
    """Stake DATASET (its id or name) so that it can join jobs."""
    tokens = parse_tokens(amount)  # a malformed command line first (exit 2)
    local = _local(dataset)
    with network() as net:
        _, staking, token = _clients(net)
        minimum = net.deployment.config.min_dataset_stake
        if tokens < minimum:
            raise UserError(f"the minimum dataset stake is {format_tokens(minimum)}")
        staked = staking.dataset(local.dataset_id)
        if staked.exists:
            raise UserError(
                f"{local.name} (0x{local.dataset_id.hex()}) is already staked by {staked.owner}, "
                f"{format_tokens(staked.stake)}; see `market dataset list`"
            )
        _require_funds(token, signer.address, tokens, "the stake")
        account = signer.unlock()
        with step("staking"):
            staking.stake_dataset(account, local.dataset_id, tokens, local.metadata_uri)
        record = staking.dataset(local.dataset_id)
    if as_json:
        emit_json({"dataset": "0x" + local.dataset_id.hex(), "stake": record.stake})
    else:
        out.print(
            f"staked {format_tokens(record.stake)} on {local.name} (0x{local.dataset_id.hex()})"
        )


@dataset_group.command("list")
@click.option("--account", "alias", envvar="MARKET_ACCOUNT", default=None)
@network_options
@json_option
def dataset_list(alias: str | None, network: Net, as_json: bool) -> None:
    """Registered datasets and their stakes on chain."""
    locals_ = registered_datasets()
    with network() as net:
        _, staking, _ = _clients(net)
        rows = []
        for d in locals_:
            record = staking.dataset(d.dataset_id)
            rows.append((d, record))
        if alias:
            owner = Signer(alias, None).address
            rows = [(d, r) for d, r in rows if r.exists and r.owner == owner]
    data = [
        {
            "dataset": "0x" + d.dataset_id.hex(),
            "name": d.name,
            "kind": d.kind,
            "rows": d.rows if d.model is None else None,
            "path": str(d.path),
            "owner": r.owner if r.exists else None,
            "stake": r.stake,
            "unbonding_since": r.unstake_requested_at,
        }
        for d, r in rows
    ]
    if as_json:
        emit_json(data)
        return
    if not data:
        out.print("no datasets: `market dataset register PATH`")
        return
    out.print(
        table(
            "Datasets",
            ["name", "kind", "id", "rows", "stake", "state"],
            [
                [
                    x["name"],
                    x["kind"],
                    x["dataset"][:18] + "…",
                    "-" if x["rows"] is None else x["rows"],
                    format_tokens(x["stake"]),
                    "unbonding" if x["unbonding_since"] else ("staked" if x["owner"] else "local"),
                ]
                for x in data
            ],
        )
    )


@dataset_group.command("unstake")
@click.argument("dataset")
@network_options
@account_options
@json_option
def dataset_unstake(dataset: str, network: Net, signer: Signer, as_json: bool) -> None:
    """Start unbonding DATASET: it joins no new job; withdraw after the unbonding period."""
    local = _local(dataset)
    with network() as net:
        _, staking, _ = _clients(net)
        account = signer.unlock()
        with step("requesting the unstake"):
            staking.request_dataset_unstake(account, local.dataset_id)
        record = staking.dataset(local.dataset_id)
        unlock = unlock_at(record.unstake_requested_at, net.deployment.config.unbonding_period)
    if as_json:
        emit_json({"dataset": "0x" + local.dataset_id.hex(), "unlock_at": unlock})
    else:
        out.print(f"{local.name} is unbonding; withdraw from {format_time(unlock)}")


@dataset_group.command("withdraw")
@click.argument("dataset")
@network_options
@account_options
@json_option
def dataset_withdraw(dataset: str, network: Net, signer: Signer, as_json: bool) -> None:
    """Take DATASET's stake back once its unbonding period is over."""
    local = _local(dataset)
    with network() as net:
        _, staking, token = _clients(net)
        account = signer.unlock()
        got = _received(
            token, account.address, lambda: staking.withdraw_dataset(account, local.dataset_id)
        )
    if as_json:
        emit_json({"dataset": "0x" + local.dataset_id.hex(), "withdrawn": got})
    else:
        out.print(f"withdrew {format_tokens(got)} from {local.name}")


@dataset_group.command("mock")
@click.argument("dataset")
def dataset_mock(dataset: str) -> None:
    """Print DATASET's mock rows (synthetic, same schema) as CSV."""
    local = _local(dataset)
    if local.model is not None:
        raise UserError(
            f"{local.name} is a model: models have no mock data (mock rows exist for tables; "
            "a model serves ensemble jobs, scored on the job's public evaluation set)"
        )
    click.echo(local.mock_path.read_text(), nl=False)


@dataset_group.command("budget")
@click.argument("dataset")
@click.option(
    "--account",
    "alias",
    envvar="MARKET_ACCOUNT",
    default=None,
    help="Whose light-node ledger to read (default: every ledger on this machine).",
)
@click.option(
    "--policy",
    "policy_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The policy the light node runs with (its budget: the totals).",
)
@json_option
def dataset_budget(dataset: str, alias: str | None, policy_file: Path | None,
                   as_json: bool) -> None:  # fmt: skip
    """DATASET's differential-privacy budget (its id or name): the total (from the policy's
    budget), what the jobs it took part in spent under the budget's composition rule, what is
    left, and each spend (job, buyer, epsilon, delta, when), from the light node's ledger."""
    import time

    from compute.budget import Standing, basic, mock_spend, standing
    from compute.policy import PolicyError, parse_policy
    from nodes.light import LightState

    local = _local(dataset)
    budget = None
    if policy_file is not None:
        try:
            budget = parse_policy(policy_file.read_bytes()).budget_for(
                "0x" + local.dataset_id.hex(), local.name
            )
        except PolicyError as exc:
            raise UserError(f"{policy_file}: {exc}") from None
    ledgers = Home.default().dir("light")
    paths = [ledgers / f"{alias}.db"] if alias else sorted(ledgers.glob("*.db"))
    name = "0x" + local.dataset_id.hex()
    spends = [s for p in paths if p.exists() for s in LightState(str(p)).spends(name)]
    spends.sort(key=lambda s: (s.at, s.job))
    mock = mock_spend(local)
    ledger = ([mock] if mock else []) + spends
    now = time.time()
    per_buyer: dict[str, Standing] = {}
    if budget is None:  # unlimited: what was spent, under basic composition
        spent, counted = basic(ledger), ledger
    else:
        whole = standing(budget, ledger, now)
        spent, counted = whole.spent, list(whole.spends)
        if budget.per_buyer is not None:
            for buyer in sorted({s.buyer for s in spends}):
                per_buyer[buyer] = standing(budget, ledger, now, buyer)
    jobs = [{**s.to_json(), "counted": s in counted} for s in ledger]
    data: dict[str, Any] = {
        "dataset": name,
        "name": local.name,
        "budget": None if budget is None else budget.model_dump(mode="json"),
        "total": None if budget is None else {"epsilon": budget.epsilon, "delta": budget.delta},
        "spent": {"epsilon": spent.epsilon, "delta": spent.delta},
        "remaining": None
        if budget is None
        else dict(zip(("epsilon", "delta"), whole.remaining, strict=True)),
        # The policy's rule, and the one that gave the figure (zcdp charges the tighter).
        "rule": spent.rule if budget is None else f"{budget.composition}: {spent.rule}",
        "jobs": jobs,
        "per_buyer": {
            b: {
                "spent": {"epsilon": st.spent.epsilon, "delta": st.spent.delta},
                "remaining": dict(zip(("epsilon", "delta"), st.remaining, strict=True)),
            }
            for b, st in per_buyer.items()
        },  # fmt: skip
    }
    if as_json:
        emit_json(data)
        return

    def pair(x: dict[str, float] | None) -> str:
        return "unlimited" if x is None else f"epsilon {x['epsilon']:.6g}, delta {x['delta']:.3g}"

    window = "" if budget is None or budget.window_s is None else f", over {budget.window_s} s"
    rows = [["total", pair(data["total"]) + window], ["spent", pair(data["spent"])],
            ["remaining", pair(data["remaining"])], ["composition", data["rule"]]]  # fmt: skip
    out.print(table(f"Privacy budget of {local.name}", ["", "epsilon, delta"], rows))
    if budget is None:
        out.print("no budget set: give the light node's policy (--policy FILE) with a budget")
    if per_buyer:
        out.print(table("Per buyer", ["buyer", "spent", "remaining"],
                        [[b, pair(v["spent"]), pair(v["remaining"])]
                         for b, v in data["per_buyer"].items()]))  # fmt: skip
    if not jobs:
        out.print("no job has spent any of it yet")
        return
    out.print(table("Spent by", ["job", "buyer", "epsilon", "delta", "when", "counted"],
                    [[j["what"] if j["job"] == 0 else j["job"], j["buyer"] or "-",
                      f"{j['epsilon']:.6g}", f"{j['delta']:.3g}",
                      format_time(int(j["at"])) if j["at"] else "-",
                      "yes" if j["counted"] else "no (outside the window)"]
                     for j in jobs]))  # fmt: skip


# ------------------------------------------------------------------------------------ heavy
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
        _, staking, token = _clients(net)
        minimum = net.deployment.config.min_heavy_node_stake
        if tokens < minimum:
            raise UserError(f"the minimum heavy-node stake is {format_tokens(minimum)}")
        if staking.heavy_node(signer.address).registered:
            raise UserError(
                f"{signer.address} is already a registered heavy node; see `market heavy status "
                f"--account {signer.alias}`"
            )
        _require_funds(token, signer.address, tokens, "the stake")
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
        escrow, staking, _ = _clients(net)
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
        _, staking, _ = _clients(net)
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
        _, staking, _ = _clients(net)
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
        _, staking, token = _clients(net)
        account = signer.unlock()
        got = _received(token, account.address, lambda: staking.withdraw_heavy_node(account))
    if as_json:
        emit_json({"node": account.address, "withdrawn": got})
    else:
        out.print(f"withdrew {format_tokens(got)}")
