"""`market bench network`: one job with N providers, posted to finalized (see
market/bench/network.py).
"""

from __future__ import annotations

import click

from market.cli.common import emit_json, err, int_list


@click.command("network")
@click.option(
    "--providers",
    default="1000",
    show_default=True,
    help="Providers in the job; several sizes comma-separated (e.g. 100,1000,10000).",
)
@click.option(
    "--network",
    type=click.Choice(["embedded", "anvil"]),
    default="embedded",
    show_default=True,
    help="Everything in this process, or an Anvil devnet with each heavy node its own process.",
)
@click.option(
    "--concurrency",
    default=16,
    show_default=True,
    type=click.IntRange(1, 512),
    help="Providers submitting at once (each on a keep-alive connection).",
)
@click.option(
    "--window",
    default=None,
    type=click.FloatRange(1, 3_600),
    help="Anvil only: seconds from posting to the deadline (default 10 + 30 ms per provider).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the providers' tables.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_network(
    providers: str,
    network: str,
    concurrency: int,
    window: float | None,
    seed: int,
    as_json: bool,
) -> None:
    """One statistics job from bounty posted to finalized with N providers, every component
    real (signatures, sealed boxes, durable stores, stake checks, agreement, settlement on
    chain); setup and claims reported apart. With several sizes, one run each."""
    from market.bench.network import format_network_table, run_network_bench

    results = []
    for n in int_list(providers, 3, "at least 3 (the job's minimum)"):
        with err.status(f"{n} providers on {network}") as status:
            results.append(run_network_bench(n, network, seed, concurrency, window, status.update))
    if as_json:
        emit_json(results[0] if len(results) == 1 else results)
        return
    click.echo(format_network_table(results))
