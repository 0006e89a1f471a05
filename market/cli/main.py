"""The `market` command: benchmarks and the demo (wallet, bounty, dataset and node commands
build on the same group)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from market.chain import Chain, ChainConnectionError, ChainError, ContractRevert

EXIT_ERROR = 1
"""Bad input or a failed precondition; the message says what to do."""
EXIT_REVERTED = 3
"""The chain rejected a transaction (a contract custom error)."""
EXIT_UNREACHABLE = 4
"""The network did not answer."""

err = Console(stderr=True)
out = Console()


class MarketGroup(click.Group):
    """Turns the errors a user can cause into one line on stderr and a stable exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ContractRevert as exc:
            _fail(f"transaction reverted: {exc}", EXIT_REVERTED)
        except ChainConnectionError as exc:
            _fail(f"network unreachable: {exc}", EXIT_UNREACHABLE)
        except ChainError as exc:
            _fail(str(exc), EXIT_ERROR)


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _emit_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter("every value must be a positive integer")
    return values


@contextmanager
def _chain(network: str) -> Iterator[Chain]:
    chain = Chain.anvil() if network == "anvil" else Chain.embedded()
    with chain:
        yield chain


@click.group(cls=MarketGroup)
@click.version_option(package_name="data-market", prog_name="market")
def main() -> None:
    """A marketplace for computations over data that never leaves its owners."""


# ---------------------------------------------------------------------------------- bench
@main.group()
def bench() -> None:
    """Benchmarks that print figures (never pass/fail on time)."""


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

    counts = _int_list(sizes)
    with _chain(network) as chain, err.status("measuring gas on real transactions"):
        result = run_gas_bench(chain, counts)
    if as_json:
        _emit_json(result)
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
    """Secure share + reduce against a plaintext NumPy sum of the same data."""
    from compute.bench import format_reduce_table, run_reduce_bench

    names = tuple(s.strip() for s in schemes.split(",") if s.strip())
    unknown = sorted(set(names) - {"additive", "shamir"})
    if unknown or not names:
        raise click.BadParameter(f"unknown scheme(s) {unknown}; use additive and/or shamir")
    with err.status("sharing and reducing"):
        result = run_reduce_bench(providers, _int_list(lengths), names, seed)
    if as_json:
        _emit_json(result)
        return
    click.echo(format_reduce_table(result, providers))


# ---------------------------------------------------------------------------------- demo
@main.command()
@click.option("--providers", default=50, show_default=True, type=click.IntRange(3))
@click.option("--seed", type=int, default=None, help="Fix the providers' data.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(providers: int, seed: int | None, as_json: bool) -> None:
    """One statistics bounty end to end on the embedded chain: post, secure reduce, settle,
    claim."""
    from market.demo import run_demo

    with Chain.embedded() as chain, err.status("starting") as status:
        report = run_demo(chain, providers, seed, progress=lambda s: status.update(s))
    if as_json:
        from dataclasses import asdict

        _emit_json({**asdict(report), "state": report.state.name})
        return
    _print_report(report)


def _tokens(amount: int) -> str:
    from market.chain import TOKEN

    return f"{amount / TOKEN:,.4f}"


def _print_report(report: Any) -> None:
    out.print(
        f"[bold]Job {report.job_id}[/]: mean systolic blood pressure over {report.providers} "
        f"clinics, {report.records:,} records, state [bold]{report.state.name}[/]"
    )
    out.print(
        f"  secure result {report.secure_mean:.6f}   plaintext {report.plain_mean:.6f}   "
        f"difference {report.error:.2e}"
    )
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
