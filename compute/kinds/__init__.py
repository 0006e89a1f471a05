"""The job kinds, one module each, and their registry (`KINDS`). Each is a
`compute.kinds.base.JobKind`; a kind's proposal class is one member of the union
discriminated on `kind` (`AnyProposal`). Adding a kind: a module here and its line below."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from compute.kinds.aggregate import AGGREGATE, AggregateProposal
from compute.kinds.base import JobKind, LateInput, Problem, Settlement
from compute.kinds.ensemble import ENSEMBLE, EnsembleProposal, EnsembleSpec
from compute.kinds.forecast import FORECAST, ForecastProposal, ForecastSpec
from compute.kinds.valuation import VALUATION, ValuationProposal, ValuationSpec

KINDS: dict[str, JobKind] = {kind.name: kind for kind in (AGGREGATE, ENSEMBLE, VALUATION, FORECAST)}
"""Every kind by name, in the order `bounty template --help` lists them."""

Kind = Literal[tuple(KINDS)]  # type: ignore[valid-type]
"""A kind's name."""

AnyProposal = Annotated[
    AggregateProposal | EnsembleProposal | ValuationProposal | ForecastProposal,
    Field(discriminator="kind"),
]
"""A proposal of any kind (for schemas; `compute.proposal.parse_proposal` parses one)."""


def kind_named(name: str) -> JobKind:
    """The kind called `name`; `KeyError` names the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown kind {name!r} (use {', '.join(KINDS)})") from None


__all__ = [
    "KINDS", "AnyProposal", "JobKind", "Kind", "LateInput", "Problem", "Settlement",
    "EnsembleSpec", "ForecastSpec", "ValuationSpec", "kind_named",
]  # fmt: skip
