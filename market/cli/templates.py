"""`market bounty template`: the proposal a buyer edits and posts. Each kind builds its own
(`JobKind.proposal_template`, from the options it takes); this command parses the files and
times those options name and passes their values."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import click

from compute.kinds import KINDS, JobKind
from compute.kinds.base import MissingOption
from market.cli.common import BadValue, UserError, parse_deadline


def _option(ctx: click.Context, name: str) -> click.Parameter:
    return next(p for p in ctx.command.params if p.name == name)


def _flag(ctx: click.Context, name: str) -> str:
    return _option(ctx, name).opts[0]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _refuse_foreign(ctx: click.Context, chosen: JobKind) -> None:
    """Refuse the options of other kinds' templates that were given (and change nothing)."""
    owners = {name: k for k in KINDS.values() for name in k.template_options}
    foreign: dict[str, list[str]] = {}
    for name, owner in owners.items():
        if name in chosen.template_options:
            continue
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            foreign.setdefault(owner.name, []).append(_flag(ctx, name))
    if not foreign:
        return
    owner_name, flags = next(iter(foreign.items()))
    owner, function = KINDS[owner_name], chosen.fixed.get(("map", "function"))
    if function is not None and ("map", "function") not in owner.fixed:
        raise UserError(
            f"{', '.join(flags)} apply to {owner_name} templates; {_article(chosen.name)} "
            f"{chosen.name} job's map and reduce are fixed ({function}, "
            f"{chosen.fixed[('reduce', 'op')]})"
        )
    raise UserError(f"{', '.join(flags)} applies to --kind {owner_name} only")


@click.command("template")
@click.option(
    "--kind",
    type=click.Choice(list(KINDS)),
    default="aggregate",
    show_default=True,
    help="; ".join(f"{k.name}: {k.title}" for k in KINDS.values()) + ".",
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
    "ensemble",
    type=click.File("rb"),
    default=None,
    metavar="TERMS",
    help="The ensemble terms JSON that `market bounty evaluation FILE.npz --classes N --json` "
    "prints (a file, or - for stdin); --kind ensemble only.",
)
@click.option(
    "--valuation",
    "valuation",
    type=click.File("rb"),
    default=None,
    metavar="TERMS",
    help="The valuation terms JSON that `market valuation publish ... --json` prints (a file, "
    "or - for stdin); --kind valuation only.",
)
@click.option(
    "--max-slash-bps",
    "max_slash_bps",
    type=click.IntRange(0, 10_000),
    default=None,
    help="--kind valuation: the most a harmful dataset loses, in basis points (default 0).",
)
@click.option(
    "--targets",
    type=click.IntRange(2, 2**16),
    default=None,
    metavar="N",
    help="--kind forecast: how many published targets each holder predicts.",
)
@click.option(
    "--resolution",
    "resolution_time",
    default=None,
    metavar="WHEN",
    help="--kind forecast: from when the buyer may post the outcomes: a unix time, an ISO time, "
    "or a duration from now (10d); at or after the deadline `bounty post` sets.",
)
@click.option(
    "--payout-factor",
    type=click.FloatRange(0, 1_000, min_open=True),
    default=None,
    help="--kind forecast: a score times this is the share of its stake a holder earns or "
    "loses (default 1.0).",
)
@click.option(
    "--cap-bps",
    type=click.IntRange(1, 10_000),
    default=None,
    help="--kind forecast: the clip on that share, both ways, in basis points of the stake; "
    "also the job's max_slash_bps (default 2000).",
)
@click.option("--scheme", type=click.Choice(["shamir", "additive"]), default="shamir")
@click.option("--min-participants", default=3, show_default=True, type=click.IntRange(1))
@click.option(
    "--title",
    default=None,
    help="Default: the kind's, e.g. 'A statistic over providers' data' for an aggregate.",
)
@click.pass_context
def bounty_template(
    ctx: click.Context, kind: str, scheme: str, min_participants: int, title: str | None,
    **given: Any,
) -> None:  # fmt: skip
    """Print a proposal to edit and post (`bounty post` fills in budget, deadline, committee).

    An ensemble proposal (--kind ensemble) names the public evaluation set that every model
    holder scores: publish it first with `market bounty evaluation`, then pass its terms. A
    valuation proposal takes the terms `market valuation publish` prints (--valuation); a
    forecast, its targets and resolution time (--targets, --resolution)."""
    chosen = KINDS[kind]
    _refuse_foreign(ctx, chosen)
    options = {
        name: _PARSE.get(name, _as_is)(given[name], _flag(ctx, name))
        for name in chosen.template_options
        if given.get(name) is not None
    }
    try:
        template = chosen.proposal_template(
            scheme=scheme, min_participants=min_participants, title=title, **options
        )
    except MissingOption as missing:
        option = _option(ctx, missing.option)
        raise UserError(
            f"--kind {kind} needs {option.opts[0]} {option.metavar}: {missing.hint}"
        ) from None
    click.echo(json.dumps(template, indent=2))


def _as_is(value: Any, flag: str) -> Any:
    return value


def _when(text: str, flag: str) -> int:
    try:
        return parse_deadline(text, int(time.time()))
    except BadValue as exc:
        raise BadValue(f"{flag}: {str(exc).replace('deadline ', '', 1)}") from None


def _terms(source: Any, flag: str, *, kind: str, command: str) -> dict[str, Any]:
    """A kind's terms in `source` (a JSON object, as `command` prints it: the terms, a whole
    proposal or `{"KIND": {...}}`), checked against the kind's terms model."""
    from pydantic import ValidationError

    from compute.problems import describe

    model = KINDS[kind].proposal_class.model_fields[kind].annotation
    name = getattr(source, "name", flag)
    shown = "stdin" if name == "<stdin>" else name
    try:
        terms = json.loads(source.read())
    except ValueError as exc:
        raise UserError(f"{shown} is not JSON ({exc}); pass the terms `{command}` prints") from None
    if isinstance(terms, dict) and isinstance(terms.get(kind), dict):
        terms = terms[kind]  # a whole proposal, or {"ensemble": {...}}
    if not isinstance(terms, dict):
        raise UserError(f"{shown} must hold a JSON object (the {kind} terms)")
    try:
        model.model_validate(terms)
    except ValidationError as exc:
        problems = "; ".join(f"{p}: {m}" for p, m in describe(exc, model))
        raise UserError(f"{shown} does not hold valid {kind} terms: {problems}") from None
    return terms


_PARSE = {
    "ensemble": partial(_terms, kind="ensemble", command="market bounty evaluation ... --json"),
    "valuation": partial(_terms, kind="valuation", command="market valuation publish ... --json"),
    "resolution_time": _when,
}
"""How `bounty template` reads an option's value before the kind's template takes it."""
