"""`aggregate`: a statistic over the providers' rows (sum, count, mean, variance, histogram),
with optional DP; every participant is paid an equal share of the pool."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from compute import postprocess
from compute.kinds.base import JobKind, Problem
from compute.messages import Result as RoundResult
from compute.messages import RoundConfig
from compute.postprocess import MAX_POSTPROCESS, PostProcessSpec
from compute.proposal import Proposal


class Aggregate(JobKind):
    name = "aggregate"
    title = "a statistic over the providers' rows, optionally with differential privacy"
    payout_rule = "equal"
    fixed: ClassVar = {("economics", "payout_rule"): "equal"}

    def problems(self, proposal: Proposal) -> Sequence[Problem]:
        if proposal.reduce.op == "weighted_sum":
            return [
                (("reduce", "op"), "'weighted_sum' weighs models' outputs: use kind 'ensemble'")
            ]
        if proposal.map.function == "model_probabilities":
            return [
                (("map", "function"), "'model_probabilities' scores a model: use kind 'ensemble'")
            ]
        return postprocess.problems(proposal)

    def summary(
        self, proposal: Proposal, config: RoundConfig, outcome: RoundResult
    ) -> Mapping[str, Any]:
        """The proposal's public post-processing of the released values (an audit's Gini,
        top-k% share, ratios to a baseline), computed from the noised release: DP costs
        nothing more (docs/privacy-budget.md)."""
        if not proposal.postprocess:
            return {}
        return {"postprocess": postprocess.run_postprocess(proposal, outcome.values)}

    def describe(self, summary: Mapping[str, Any]) -> list[str]:
        lines = []
        for step in (summary.get("aggregate") or {}).get("postprocess", []):
            params = ", ".join(f"{k}={v}" for k, v in step["params"].items())
            figures = ", ".join(
                f"{k} {_figure(v)}" for k, v in step.items() if k not in ("function", "params")
            )
            lines.append(f"{step['function']}({params}): {figures}")
        return lines

    template_options: ClassVar = ("columns", "op", "lo", "hi", "bins")

    def template(
        self,
        *,
        columns: Sequence[str] = ("value",),
        op: str = "mean",
        lo: float = 0.0,
        hi: float = 1000.0,
        bins: int | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """`columns` each kept within [`lo`, `hi`] and reduced by `op` (a count reads none)."""
        count = op == "count"
        fields = [] if count else [{"name": c, "lo": lo, "hi": hi} for c in columns]
        return {
            "title": "A statistic over providers' data",
            "map": {
                "function": "row_count" if count else "column_values",
                "output": {"fields": fields},
            },
            "reduce": {"op": op, "bins": bins},
        }


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_figure(v)}" for k, v in value.items()) + "}"
    return str(value)


AGGREGATE = Aggregate()


class AggregateProposal(Proposal):
    kind: Literal["aggregate"]
    job_kind: ClassVar[JobKind] = AGGREGATE
    postprocess: Annotated[list[PostProcessSpec], Field(max_length=MAX_POSTPROCESS)] = []
    """Public post-processing of the released counts (`compute.postprocess`)."""


AGGREGATE.proposal_class = AggregateProposal
