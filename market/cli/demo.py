"""`market demo`: one bounty end to end, and the report it prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table

from market.chain import Chain
from market.cli.common import UserError, emit_json, err, out


@click.command("demo")
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
@click.option("--audit", is_flag=True,
              help="A platform audit: 4 platforms' impression logs (or --providers), counts per "
              "item under DP, and their Gini, top-10% share and ratio to a published baseline, "
              "secure beside plaintext (embedded chain only).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(
    providers: int, seed: int | None, devnet: bool, kind: str, models: int | None,
    audit: bool, as_json: bool,
) -> None:  # fmt: skip
    """One bounty end to end: deploy, heavy nodes, providers' light nodes, secure reduce,
    settlement, claims (on the embedded chain unless --devnet)."""
    from dataclasses import asdict

    if audit:
        from market.cli.audit_demo import audit_demo

        given = click.get_current_context().get_parameter_source("providers")
        audit_demo(4 if given is click.core.ParameterSource.DEFAULT else providers, seed, as_json)
        return

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
