"""`market demo`: one bounty end to end, and the report it prints."""

from __future__ import annotations

from typing import Any

import click

from market.chain import Chain
from market.cli.common import UserError, emit_json, err, out
from market.demos import DEMOS


@click.command("demo")
@click.option("--providers", default=50, show_default=True, type=click.IntRange(3))
@click.option("--seed", type=int, default=None, help="Fix the providers' data.")
@click.option(
    "--devnet",
    is_flag=True,
    help="On an Anvil devnet with every node a separate process (waits for a real deadline; "
    "--kind aggregate only).",
)
@click.option(
    "--kind",
    type=click.Choice(list(DEMOS)),
    default="aggregate",
    show_default=True,
    help="; ".join(f"{name}: {d.about}" for name, d in DEMOS.items())
    + " (on the embedded chain unless --devnet).",
)
@click.option("--models", type=click.IntRange(3, 6), default=None,
              help="--kind ensemble: how many model holders (3 to 6, default 6; the bounty's "
              "privacy.min_participants is 3).")  # fmt: skip
@click.option(
    "--targets",
    type=click.IntRange(2, 2**16),
    default=None,
    help="--kind forecast: how many targets each holder predicts (default 200).",
)
@click.option("--audit", is_flag=True,
              help="A platform audit: 4 platforms' impression logs (or --providers), counts per "
              "item under DP, and their Gini, top-10% share and ratio to a published baseline, "
              "secure beside plaintext (embedded chain only).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(
    providers: int, seed: int | None, devnet: bool, kind: str, models: int | None,
    targets: int | None, audit: bool, as_json: bool,
) -> None:  # fmt: skip
    """One bounty end to end: deploy, heavy nodes, providers' light nodes, secure reduce,
    settlement, claims (on the embedded chain unless --devnet)."""
    from dataclasses import asdict

    ctx = click.get_current_context()
    if audit:
        from market.cli.audit_demo import audit_demo

        given = ctx.get_parameter_source("providers")
        audit_demo(4 if given is click.core.ParameterSource.DEFAULT else providers, seed, as_json)
        return

    chosen = DEMOS[kind]
    values = {"providers": providers, "models": models, "targets": targets}
    for name in values:
        taken = ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        if taken and name not in chosen.options:
            owner = next(k for k, d in DEMOS.items() if name in d.options)
            raise UserError(f"--{name} is for --kind {owner}; the {kind} demo does not take it")
    if devnet and chosen.devnet is None:
        raise UserError(f"--kind {kind} runs on the embedded chain; drop --devnet")
    options = {n: values[n] for n in chosen.options if values[n] is not None}
    if seed is not None:
        options["seed"] = seed
    with err.status("starting") as status:
        progress = lambda s: status.update(s)  # noqa: E731
        if devnet:
            report = chosen.function("devnet")(progress=progress, **options)
        else:
            with Chain.embedded() as chain:
                report = chosen.function("run")(chain, progress=progress, **options)
    if as_json:
        emit_json({**asdict(report), **_state(report)})
        return
    for part in chosen.function("report")(report):
        out.print(part)


def _state(report: Any) -> dict[str, Any]:
    state = getattr(report, "state", None)
    return {} if state is None else {"state": state.name}
