"""`market bounty template`: the proposal a buyer edits and posts, built per kind in this one
place (the per-kind building is to move behind the job-kind interface)."""

from __future__ import annotations

import json
from typing import Any

import click

from market.cli.common import (
    UserError,
)

_AGGREGATE_ONLY = {
    "columns": "--column",
    "op": "--op",
    "lo": "--lo",
    "hi": "--hi",
    "bins": "--bins",
}
"""Template options that shape an aggregate's map and reduce (an ensemble's are fixed)."""


@click.command("template")
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

    from compute.kinds import EnsembleSpec
    from compute.problems import describe

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
