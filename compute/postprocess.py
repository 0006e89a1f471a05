"""Public post-processing of a released aggregate: the audits' figures, named in the proposal.

An audit (the PMSR LinkedIn and Dailymotion audits) asks for counts grouped by a categorical
column (`category_counts` feeding a `histogram`, or a `sum` over fields) and then for figures
computed from those counts: how each group's share compares with a published baseline, how
concentrated the counts are. The proposal names them in `postprocess`, a list of
`{"function": NAME, "params": {...}}` checked against `POSTPROCESS` when it is parsed; anyone
holding the released vector (the result document's `values`) computes them with
`run_postprocess`, and so does the committee, which writes them in the result document.

| function | params | figures |
|---|---|---|
| `baseline_ratio` | `baseline`: group to share | each group's share, and share / baseline |
| `gini` | none | the Gini coefficient of the counts |
| `top_share` | `percent` (default 10) | share of the total held by the top `percent`% |

Every function reads the released vector, with its DP noise in it, and nothing else: a count
made negative by the noise is taken as 0 first (post-processing too). A function of a DP
release is as private as the release (post-processing), so these figures cost no budget
beyond the job's own (epsilon, delta); their error comes from the noise alone, and
`noise_l1_bound` with `figure_error_bound` bounds it from the noise scale the job states.

The groups are the histogram's bins (for `category_counts`, its categories; else the bins'
ranges) or a `sum`'s output fields. Other ops release no vector of counts to post-process
(a mean, a variance, a count, an ensemble's probabilities) and are refused.

Pure: values in, values out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compute.maps import categories_of, category_problems

if TYPE_CHECKING:
    from compute.proposal import Proposal

Problem = tuple[tuple[str | int, ...], str]

MAX_POSTPROCESS = 16
"""Most post-processing steps one proposal names."""


def _clipped(values: ArrayLike) -> NDArray[np.float64]:
    """The released counts, a negative noisy count taken as 0."""
    return np.maximum(np.asarray(values, dtype=np.float64), 0.0)


def gini(values: ArrayLike) -> float:
    """The Gini coefficient of the counts (0: all equal; (n - 1) / n: all in one group),
    `sum_ij |x_i - x_j| / (2 n sum x)`; 0 for an all-zero vector."""
    x = np.sort(_clipped(values))
    n, total = x.size, float(x.sum())
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(np.dot(2 * ranks - n - 1, x) / (n * total))


def top_groups(groups: int, percent: float) -> int:
    """How many groups the top `percent`% is: `ceil(groups * percent / 100)`, at least 1."""
    return max(1, math.ceil(groups * percent / 100 - 1e-9))


def top_share(values: ArrayLike, percent: float = 10.0) -> float:
    """The share of the total held by the `top_groups` largest counts; 0 for an all-zero
    vector."""
    x = np.sort(_clipped(values))[::-1]
    total = float(x.sum())
    if total <= 0:
        return 0.0
    return float(x[: top_groups(x.size, percent)].sum() / total)


def shares(values: ArrayLike) -> NDArray[np.float64]:
    """Each group's share of the total (zeros for an all-zero vector)."""
    x = _clipped(values)
    total = float(x.sum())
    return x / total if total > 0 else np.zeros_like(x)


def baseline_ratio(values: ArrayLike, baseline: Sequence[float]) -> NDArray[np.float64]:
    """Each group's share divided by its baseline share (the baseline normalised to sum 1):
    above 1, the group holds more of the counts than the baseline gives it."""
    base = np.asarray(baseline, dtype=np.float64)
    return shares(values) / (base / base.sum())


# --- the registry --------------------------------------------------------------------------


Figures = dict[str, Any]
Apply = Callable[[NDArray[np.float64], tuple[str, ...], Mapping[str, Any]], Figures]
Check = Callable[[Mapping[str, Any]], list[tuple[str, str]]]
"""A function's param check: (param name, problem) pairs, without the groups."""


@dataclass(frozen=True)
class PostProcess:
    """One vetted post-processing function of a released vector."""

    name: str
    description: str
    params: frozenset[str]
    check: Check
    apply: Apply
    """Released values, the groups' names and the params in; JSON-able figures out."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_none(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    return []


def _check_top(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    percent = params.get("percent", 10)
    if not (_number(percent) and 0 < percent <= 100):
        return [("percent", f"must be a number in (0, 100], got {percent!r}")]
    return []


def _check_baseline(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    baseline = params.get("baseline")
    if not isinstance(baseline, dict) or not baseline:
        return [("baseline", "needs the published baseline: an object of group to share")]
    bad = [g for g, v in baseline.items() if not (_number(v) and v > 0)]
    if bad:
        return [("baseline", f"shares must be positive numbers (not for: {', '.join(bad)})")]
    return []


def _gini(
    values: NDArray[np.float64], groups: tuple[str, ...], params: Mapping[str, Any]
) -> Figures:
    return {"gini": gini(values)}


def _top(
    values: NDArray[np.float64], groups: tuple[str, ...], params: Mapping[str, Any]
) -> Figures:
    percent = float(params.get("percent", 10))
    return {
        "percent": percent,
        "groups": top_groups(len(values), percent),
        "share": top_share(values, percent),
    }


def _ratio(
    values: NDArray[np.float64], groups: tuple[str, ...], params: Mapping[str, Any]
) -> Figures:
    baseline = [float(params["baseline"][g]) for g in groups]
    ratios = baseline_ratio(values, baseline)
    return {
        "shares": dict(zip(groups, (float(s) for s in shares(values)), strict=True)),
        "ratios": dict(zip(groups, (float(r) for r in ratios), strict=True)),
    }


POSTPROCESS: Mapping[str, PostProcess] = {
    p.name: p
    for p in (
        PostProcess(
            "baseline_ratio",
            "each group's share of the total, divided by its share in a published baseline",
            frozenset({"baseline"}),
            _check_baseline,
            _ratio,
        ),
        PostProcess("gini", "the Gini coefficient of the counts", frozenset(), _check_none, _gini),
        PostProcess(
            "top_share",
            "the share of the total held by the top percent% of groups (default 10)",
            frozenset({"percent"}),
            _check_top,
            _top,
        ),
    )
}
"""Every vetted post-processing function, by the name a proposal uses."""


class PostProcessSpec(BaseModel):
    """One post-processing step a proposal names: a function of `POSTPROCESS` and its params
    (only the names it takes; `baseline_ratio`'s baseline an object of group to share)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    function: str
    params: Annotated[dict[str, Any], Field(max_length=4)] = {}

    @field_validator("function")
    @classmethod
    def _known(cls, function: str) -> str:
        if function not in POSTPROCESS:
            raise ValueError(
                f"unknown post-processing function {function!r} "
                f"(vetted: {', '.join(sorted(POSTPROCESS))})"
            )
        return function

    @model_validator(mode="after")
    def _params(self) -> PostProcessSpec:
        entry = POSTPROCESS[self.function]
        unknown = sorted(set(self.params) - entry.params)
        if unknown:
            raise ValueError(
                f"{self.function} takes no parameter {unknown[0]!r} (it takes: "
                f"{', '.join(sorted(entry.params)) or 'none'})"
            )
        problems = entry.check(self.params)
        if problems:
            raise ValueError("; ".join(f"{self.function} {name}: {m}" for name, m in problems))
        return self


# --- the proposal's groups and checks --------------------------------------------------------

POSTPROCESS_OPS = frozenset({"sum", "histogram"})
"""The reduce ops whose release is a vector of counts, one per group."""


def group_names(proposal: Proposal) -> tuple[str, ...]:
    """The groups of the released vector, in its order: `category_counts`'s categories, a
    histogram's bins (`[lo, hi)`, the last one closed) or a sum's output fields."""
    if proposal.map.function == "category_counts":
        return categories_of(proposal.map.params)
    if proposal.reduce.op == "histogram":
        spec = proposal.field_spec()
        bins = proposal.reduce.bins or 0
        edges = np.linspace(spec.lo, spec.hi, bins + 1)
        return tuple(
            f"[{a:g}, {b:g}{']' if i == bins - 1 else ')'}"
            for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True))
        )
    return tuple(f.name for f in proposal.map.output.fields)


def problems(proposal: Proposal) -> list[Problem]:
    """The audit's refusals: `category_counts`'s params, and post-processing only of a vector
    of counts, with a baseline that names exactly the groups."""
    out: list[Problem] = list(category_problems(proposal))
    steps: Sequence[PostProcessSpec] = getattr(proposal, "postprocess", ())
    if steps and proposal.reduce.op not in POSTPROCESS_OPS:
        out.append(
            (
                ("postprocess",),
                f"post-processing reads a vector of counts (op 'sum' or 'histogram'); op "
                f"{proposal.reduce.op!r} releases none: remove postprocess",
            )
        )
        return out
    if out:
        return out
    groups = set(group_names(proposal))
    for index, step in enumerate(steps):
        if step.function != "baseline_ratio":
            continue
        named = set(step.params["baseline"])
        if named != groups:
            missing, extra = sorted(groups - named), sorted(named - groups)
            out.append(
                (
                    ("postprocess", index, "params", "baseline"),
                    "the baseline must give a share for each group and no other"
                    + (f"; missing: {', '.join(missing)}" if missing else "")
                    + (f"; not a group: {', '.join(extra)}" if extra else ""),
                )
            )
    return out


def run_postprocess(proposal: Proposal, values: ArrayLike) -> list[Figures]:
    """The figures of each step the proposal names, over its released `values`, in order:
    `{"function": ..., "params": ..., **figures}`."""
    released = np.asarray(values, dtype=np.float64)
    groups = group_names(proposal)
    return [
        {
            "function": step.function,
            "params": dict(step.params),
            **POSTPROCESS[step.function].apply(released, groups, step.params),
        }
        for step in getattr(proposal, "postprocess", ())
    ]


# --- how far the noise can move the figures --------------------------------------------------


def noise_l1_bound(
    samples: int, scale: float, mechanism: str = "laplace", failure: float = 1e-9
) -> float:
    """A bound on the L1 norm of `samples` independent noise draws of OpenDP's discrete
    mechanisms at `scale` (Laplace `b`, Gaussian sigma), exceeded with probability at most
    `failure`.

    Laplace: a discrete Laplace's |X| is dominated by 1 + Exp(b), and a sum of k Exp(b) exceeds
    `c k b` with probability at most `exp(-k (c - 1 - ln c))` (Chernoff), so the bound is
    `samples * (1 + c b)` at the smallest such `c`. Gaussian: the L1 norm is at most `sqrt(k)`
    times the L2 norm, and `|X|` is dominated by `|N(0, sigma)| + 1`; a chi-square with k degrees
    exceeds `k + 2 sqrt(k x) + 2 x` with probability at most `e^-x` (Laurent-Massart)."""
    if samples < 1 or scale < 0 or not 0 < failure < 1:
        raise ValueError("noise_l1_bound needs samples >= 1, scale >= 0 and 0 < failure < 1")
    x = math.log(1 / failure)
    if mechanism == "gaussian":
        chi = samples + 2 * math.sqrt(samples * x) + 2 * x
        return samples + math.sqrt(samples) * scale * math.sqrt(chi)
    lo, hi = 1.0, 2.0
    while samples * (hi - 1 - math.log(hi)) < x:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if samples * (mid - 1 - math.log(mid)) < x else (lo, mid)
    return samples * (1 + hi * scale)


def figure_error_bound(noise_l1: float, released_total: float) -> float:
    """How far the noise moves the Gini coefficient, and the top-k% share, at most: `2 |e|_1 /
    S'`, where `|e|_1` bounds the noise's L1 norm and `S'` is the released counts' total (negative
    counts taken as 0). Both are ratios whose numerator moves by at most `|e|_1` (the Gini's by
    `2 n |e|_1` over `2 n S'`; a top-m sum by the noise on it) and whose denominator by `|e|_1`,
    the figure itself being at most 1; taking a negative count as 0 only moves it closer."""
    if released_total <= 0:
        return math.inf
    return 2 * noise_l1 / released_total
