"""`market dataset`: providers register local datasets, stake them and take stakes back."""

from __future__ import annotations

from pathlib import Path
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
    local_dataset,
    network_options,
    out,
    parse_tokens,
    received,
    require_funds,
    step,
    table,
)
from market.home import Home
from market.staking.rules import unlock_at
from nodes.datasets import register_dataset, registered_datasets


@click.group("dataset")
def dataset_group() -> None:
    """Register local datasets, stake them, and take stakes back."""


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
    local = local_dataset(dataset)
    with network() as net:
        _, staking, token = clients(net)
        minimum = net.deployment.config.min_dataset_stake
        if tokens < minimum:
            raise UserError(f"the minimum dataset stake is {format_tokens(minimum)}")
        staked = staking.dataset(local.dataset_id)
        if staked.exists:
            raise UserError(
                f"{local.name} (0x{local.dataset_id.hex()}) is already staked by {staked.owner}, "
                f"{format_tokens(staked.stake)}; see `market dataset list`"
            )
        require_funds(token, signer.address, tokens, "the stake")
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
        _, staking, _ = clients(net)
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
    local = local_dataset(dataset)
    with network() as net:
        _, staking, _ = clients(net)
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
    local = local_dataset(dataset)
    with network() as net:
        _, staking, token = clients(net)
        account = signer.unlock()
        got = received(
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
    local = local_dataset(dataset)
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

    local = local_dataset(dataset)
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
