"""`market bench`: benchmarks that print figures (never pass/fail on time)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from market.chain import Chain
from market.cli.bench_network import bench_network
from market.cli.common import emit_json, err, int_list


@contextmanager
def _chain(network: str) -> Iterator[Chain]:
    chain = Chain.anvil() if network == "anvil" else Chain.embedded()
    with chain:
        yield chain


@click.group("bench")
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
@click.option("--utility-buyers", default=6, show_default=True, type=click.IntRange(0, 6),
              help="Buyers in the realized-utility fidelity protocol (39 sellers each; 0 skips "
              "it).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_valuation(ks: str, examples: int, seed: int, utility_buyers: int, as_json: bool) -> None:
    """Encrypted (CKKS) versus plaintext influence scoring, and its fidelity (to plaintext, to
    retraining, and to realized utility after fine-tuning as the TIP authors measure it)."""
    from market.bench.valuation import format_valuation_table, run_valuation_bench

    with err.status("training the buyer and scoring providers under CKKS"):
        result = run_valuation_bench(int_list(ks), examples, seed, utility_buyers=utility_buyers)
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
