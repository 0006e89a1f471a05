"""The `market` command: benchmarks and the demo (wallet, bounty, dataset and node commands
build on the same group)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from rich.table import Table

from market.chain import Chain
from market.cli.bench_network import bench_network
from market.cli.bounty import bounty_group
from market.cli.claim import claim
from market.cli.common import MarketGroup, UserError, emit_json, err, int_list, out
from market.cli.dataset import dataset_group
from market.cli.heavy import heavy_group
from market.cli.network_cmds import balance, deploy_cmd, devnet_group, faucet
from market.cli.node import node_group
from market.cli.valuation_cmds import COMMANDS as VALUATION_COMMANDS
from market.cli.wallet import wallet_group


@contextmanager
def _chain(network: str) -> Iterator[Chain]:
    chain = Chain.anvil() if network == "anvil" else Chain.embedded()
    with chain:
        yield chain


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
):
    main.add_command(command)


# ---------------------------------------------------------------------------------- bench
@main.group()
def bench() -> None:
    """Benchmarks that print figures (never pass/fail on time)."""


bench.add_command(bench_network)


@bench.command("gas")
@click.option("--sizes", default="10,100,1000", show_default=True, help="Participant counts.")
@click.option(
    "--network",
    type=click.Choice(["embedded", "anvil"]),
    default="embedded",
    show_default=True,
    help="Where to measure: the in-process chain, or a fresh Anvil process.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_gas(sizes: str, network: str, as_json: bool) -> None:
    """Gas of stake, post, finalize and claim as the participant count grows."""
    from market.bench.gas import check_gas, format_gas_table, run_gas_bench

    counts = int_list(sizes)
    with _chain(network) as chain, err.status("measuring gas on real transactions"):
        result = run_gas_bench(chain, counts)
    if as_json:
        emit_json(result)
        return
    click.echo(format_gas_table(result))
    for line in check_gas(result):
        click.echo(line)


@bench.command("reduce")
@click.option("--providers", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--lengths", default="1,1000,100000", show_default=True, help="Vector lengths.")
@click.option(
    "--schemes",
    default="additive,shamir",
    show_default=True,
    help="Sharing schemes (additive, shamir).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the benchmark's data.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_reduce(providers: int, lengths: str, schemes: str, seed: int, as_json: bool) -> None:
    """Secure share + reduce against a plaintext NumPy sum of the same data: all parties'
    work on one core (`all parties`, and `seeded` with seed compression), and each party's own
    work as a ratio to its part of the plaintext sum in the same run (one provider's sharing of
    its vector, the slowest heavy node's reduce, the combine) and one provider's upload against
    its plaintext vector's bytes."""
    from market.bench.reduce import format_reduce_table, run_reduce_bench

    names = tuple(s.strip() for s in schemes.split(",") if s.strip())
    unknown = sorted(set(names) - {"additive", "shamir"})
    if unknown or not names:
        raise click.BadParameter(f"unknown scheme(s) {unknown}; use additive and/or shamir")
    with err.status("sharing and reducing, in all and party by party"):
        result = run_reduce_bench(providers, int_list(lengths), names, seed)
    if as_json:
        emit_json(result)
        return
    click.echo(format_reduce_table(result, providers))


@bench.command("valuation")
@click.option("--ks", default="256,1024", show_default=True, help="Projection sizes k.")
@click.option("--examples", default=10_000, show_default=True, type=click.IntRange(10))
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_valuation(ks: str, examples: int, seed: int, as_json: bool) -> None:
    """Encrypted (CKKS) versus plaintext influence scoring, and its fidelity."""
    from market.bench.valuation import format_valuation_table, run_valuation_bench

    with err.status("training the buyer and scoring providers under CKKS"):
        result = run_valuation_bench(int_list(ks), examples, seed)
    if as_json:
        emit_json(result)
        return
    click.echo(format_valuation_table(result))


@bench.command("ensemble")
@click.option("--scheme", type=click.Choice(["shamir", "additive"]), default="shamir",
              show_default=True, help="Sharing among the three heavy nodes.")  # fmt: skip
@click.option("--seed", default=0, show_default=True)
@click.option("--models", type=click.IntRange(2, 6), default=6, show_default=True,
              help="How many model holders: the first N of logistic, naive_bayes, "
              "decision_tree, knn, random_forest, mlp.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_ensemble(scheme: str, seed: int, models: int, as_json: bool) -> None:
    """Secure weighted ensembling of up to six model families: each model's accuracy, the
    ensemble's under sharing and in plaintext, and the gain."""
    from market.bench.ensemble import format_ensemble_table, run_ensemble_bench

    with err.status(f"training {models} models and ensembling their shared outputs"):
        result = run_ensemble_bench(seed, scheme, models)
    if as_json:
        emit_json(result)
        return
    click.echo(format_ensemble_table(result))


@main.group()
def valuation() -> None:
    """Data valuation (TIP): encrypted gradient influence.

    A buyer publishes its model and encrypted query (`publish`), posts a valuation proposal
    with the terms it prints (`market bounty post`), and after the deadline decrypts and
    reports the providers' scores (`report`)."""


for _command in VALUATION_COMMANDS:
    valuation.add_command(_command)


@valuation.command("figure")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@click.option("--k", default=1024, show_default=True, type=click.IntRange(1))
@click.option("--examples", default=10_000, show_default=True, type=click.IntRange(10))
@click.option("--seed", default=0, show_default=True)
def valuation_figure_cmd(path: str, k: int, examples: int, seed: int) -> None:
    """Write a PNG of per-example influence across providers (the TIP market figure)."""
    from market.bench.valuation import valuation_figure

    with err.status("scoring the market's examples under CKKS"):
        valuation_figure(path, examples=examples, seed=seed, k=k)
    click.echo(f"wrote {path}")


# ---------------------------------------------------------------------------------- demo
@main.command()
@click.option("--providers", default=50, show_default=True, type=click.IntRange(3))
@click.option("--seed", type=int, default=None, help="Fix the providers' data.")
@click.option(
    "--devnet",
    is_flag=True,
    help="On an Anvil devnet with every node a separate process (waits for a real deadline).",
)
@click.option(
    "--kind",
    type=click.Choice(["aggregate", "ensemble"]),
    default="aggregate",
    show_default=True,
    help="aggregate: clinics' mean blood pressure; ensemble: model holders' secure "
    "weighted ensemble (embedded chain only).",
)
@click.option("--models", type=click.IntRange(3, 6), default=None,
              help="--kind ensemble: how many model holders (3 to 6, default 6; the bounty's "
              "privacy.min_participants is 3).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(
    providers: int, seed: int | None, devnet: bool, kind: str, models: int | None, as_json: bool
) -> None:
    """One bounty end to end: deploy, heavy nodes, providers' light nodes, secure reduce,
    settlement, claims (on the embedded chain unless --devnet)."""
    from dataclasses import asdict

    if kind == "ensemble":
        if devnet:
            raise UserError("--kind ensemble runs on the embedded chain; drop --devnet")
        _ensemble_demo(seed or 0, 6 if models is None else models, as_json)
        return
    if models is not None:
        raise UserError("--models is for --kind ensemble; use --providers for an aggregate")
    with err.status("starting") as status:
        if devnet:
            from market.demos.devnet import run_devnet_demo

            report = run_devnet_demo(providers, seed, progress=lambda s: status.update(s))
        else:
            from market.demos.statistics import run_demo

            with Chain.embedded() as chain:
                report = run_demo(chain, providers, seed, progress=lambda s: status.update(s))
    if as_json:
        emit_json({**asdict(report), "state": report.state.name})
        return
    _print_report(report)


def _ensemble_demo(seed: int, models: int, as_json: bool) -> None:
    from dataclasses import asdict

    from market.demos.ensemble import run_ensemble_demo

    with err.status("starting") as status, Chain.embedded() as chain:
        report = run_ensemble_demo(chain, seed, progress=lambda s: status.update(s), models=models)
    if as_json:
        emit_json({**asdict(report), "state": report.state.name})
        return
    out.print(
        f"[bold]Job {report.job_id}[/]: a secure weighted ensemble of {len(report.weights)} "
        f"holders' models, {report.validation_rows} validation and {report.test_rows} test rows "
        f"({report.evaluation_uri}), state [bold]{report.state.name}[/]"
    )
    table = Table(title="Models (accuracy on the buyer's test labels)")
    for column in ("model", "test accuracy", "validation accuracy", "weight", "paid (DATA)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in sorted(report.accuracy, key=lambda n: -report.accuracy[n]):
        table.add_row(
            name, f"{report.accuracy[name]:.4f}", f"{report.validation_accuracy[name]:.4f}",
            f"{report.weights[name]:.4f}", _tokens(report.earnings[name]),
        )  # fmt: skip
    table.add_section()
    table.add_row("ensemble", f"{report.ensemble:.4f}", "", "", "")
    out.print(table)
    best = report.accuracy[report.best_model]
    chosen, alone = report.candidates[report.chosen], report.candidates[0]
    out.print(
        f"  weights chosen on validation: {chosen['name']} "
        f"({chosen['validation_accuracy']:.4f}; the best model alone "
        f"{alone['validation_accuracy']:.4f}, {len(report.candidates) - 1} blends evaluated)"
    )
    out.print(
        f"  ensemble test accuracy {report.ensemble:.4f}, best model ({report.best_model}) "
        f"{best:.4f}: {report.ensemble - best:+.4f}; plaintext ensemble "
        f"{report.plain_ensemble:.4f}, largest probability difference "
        f"{report.max_probability_error:.1e}"
    )
    fees = ", ".join(_tokens(f) for f in report.fee_per_node.values())
    out.print(f"  heavy node fees {fees} DATA; buyer refund {_tokens(report.refund)} DATA")


def _tokens(amount: int) -> str:
    from market.chain import TOKEN

    return f"{amount / TOKEN:,.4f}"


def _print_report(report: Any) -> None:
    out.print(
        f"[bold]Job {report.job_id}[/]: mean systolic blood pressure, {report.participants} of "
        f"{report.providers} clinics, {report.records:,} records, "
        f"state [bold]{report.state.name}[/]"
    )
    out.print(
        f"  secure result {report.secure_mean:.6f}   plaintext {report.plain_mean:.6f}   "
        f"difference {report.error:.2e}"
    )
    out.print(
        f"  {report.clipped} values outside the proposal's bounds were clipped, counted under "
        f"sharing (plaintext count {report.plain_clipped})"
    )
    if report.refused:
        reason = next(iter(report.refused.values()))
        out.print(f"  {len(report.refused)} clinics declined under their policy ({reason})")
    money = Table(title="Who earned what (DATA)", show_lines=False)
    money.add_column("party")
    money.add_column("role")
    money.add_column("amount", justify="right")
    for node, fee in report.fee_per_node.items():
        money.add_row(node, "heavy node fee", _tokens(fee))
    earnings: Sequence[tuple[str, int]] = list(report.earnings.items())
    shown = earnings[:5]
    for account, amount in shown:
        money.add_row(account, "provider payout", _tokens(amount))
    if len(earnings) > len(shown):
        rest = sum(a for _, a in earnings[len(shown) :])
        money.add_row(f"... {len(earnings) - len(shown)} more providers", "", _tokens(rest))
    money.add_row("buyer", "refund", _tokens(report.refund))
    money.add_row("[bold]total", "", f"[bold]{_tokens(report.budget)}")
    out.print(money)
    times = Table(title="Phases")
    times.add_column("phase")
    times.add_column("seconds", justify="right")
    for phase in report.phases:
        times.add_row(phase.name, f"{phase.seconds:.2f}")
    out.print(times)
