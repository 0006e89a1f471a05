"""A dataset's differential-privacy budget: the ledger's arithmetic, computed with OpenDP.

A provider sets, per dataset, a total (epsilon, delta) in its policy (`BudgetSpec`, the
policy's `budget`), optionally a total per buyer and a time window. Every job a dataset takes
part in spends the (epsilon, delta) its proposal's noise plan reports (`job_cost`); an owner's
differentially private mock data is the dataset's first spend (`mock_spend`). What a sequence of
spends costs together is a composition, computed by OpenDP's own combinators:

- `basic`: `make_composition` over (epsilon, delta)-DP measurements: the epsilons add, and the
  deltas add. Valid for any mix of mechanisms.
- `zcdp`: every spend with a zero-concentrated analysis (the discrete Gaussian's rho, from
  OpenDP's own map; a pure epsilon-DP spend as rho = epsilon^2 / 2, `make_pureDP_to_zCDP`) is
  composed in zCDP (the rhos add, `make_composition`), converted to (epsilon, delta) at the
  budget's delta less what the other spends' deltas took (`make_zCDP_to_approxDP`,
  `make_fix_delta`), then composed basically with the other spends. Both figures are valid
  bounds, so under `zcdp` the ledger charges the tighter one (the smaller epsilon within the
  delta), and names the rule that gave it. Many small spends cost far less under zCDP; a few
  large pure-DP ones cost less under basic composition.

A window (`window_s`) makes spends older than it stop counting (a renewal policy, the
provider's choice; the mock data, published for good, counts in every window). A job without
differential privacy has an unbounded epsilon: under a budget it never fits.

Pure: values in, values out (the clock is an argument); the light node stores the spends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Composition = Literal["basic", "zcdp"]

Epsilon = Annotated[float, Field(strict=False, gt=0, allow_inf_nan=False)]
Delta = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]

MOCK_JOB = 0
"""The job number of the dp mock data's spend (jobs on chain count from 1)."""


class Limit(BaseModel):
    """A total (epsilon, delta)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: Epsilon
    delta: Delta = 0.0


class BudgetSpec(Limit):
    """A policy's `budget`: what each dataset may spend in all (`epsilon`, `delta`), what each
    buyer may spend of it (`per_buyer`, optional), over which window (`window_s` seconds,
    optional: by default every spend counts for ever), under which composition rule."""

    per_buyer: Limit | None = None
    """Each buyer's own total on a dataset (its spends composed alone), within the total."""
    window_s: Annotated[int, Field(strict=True, ge=1)] | None = None
    """Spends older than this many seconds stop counting; `None`: they count for ever."""
    composition: Composition = "basic"
    """`basic` (epsilons and deltas add) or `zcdp` (the tighter of basic and zCDP)."""

    @model_validator(mode="after")
    def _zcdp_needs_delta(self) -> BudgetSpec:
        if self.composition == "zcdp":
            if self.delta == 0:
                raise ValueError("zcdp composition converts to (epsilon, delta): set a delta > 0")
            if self.per_buyer is not None and self.per_buyer.delta == 0:
                raise ValueError("zcdp composition needs per_buyer.delta > 0 too")
        return self


@dataclass(frozen=True)
class Spend:
    """One job's (or the mock data's) cost to one dataset."""

    job: int
    buyer: str
    epsilon: float
    delta: float
    rho: float | None = None
    """Its zCDP cost when its mechanism has one (the Gaussian); None otherwise."""
    at: float = 0.0
    """When it was spent (unix seconds)."""
    what: str = "job"

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "what": self.what,
            "buyer": self.buyer,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho": self.rho,
            "at": self.at,
        }


@dataclass(frozen=True)
class Composed:
    """What some spends cost together, and the rule that gave the figure."""

    epsilon: float
    delta: float
    rule: str
    """`basic` or `zCDP`."""
    rho: float | None = None
    """Under zCDP, the composed rho of the spends it covered."""


@dataclass(frozen=True)
class Standing:
    """A budget against the spends that count: its total, what they cost, what is left."""

    limit: Limit
    spent: Composed
    spends: tuple[Spend, ...]

    @property
    def remaining(self) -> tuple[float, float]:
        return (
            max(self.limit.epsilon - self.spent.epsilon, 0.0),
            max(self.limit.delta - self.spent.delta, 0.0),
        )

    def describe(self) -> str:
        eps, delta = self.remaining
        return f"epsilon {eps:.6g}, delta {delta:.3g} left of {_pair(self.limit)}"

    def to_json(self) -> dict[str, Any]:
        eps, delta = self.remaining
        return {
            "total": {"epsilon": self.limit.epsilon, "delta": self.limit.delta},
            "spent": {"epsilon": self.spent.epsilon, "delta": self.spent.delta},
            "remaining": {"epsilon": eps, "delta": delta},
            "rule": self.spent.rule,
            "rho": self.spent.rho,
            "jobs": [s.to_json() for s in self.spends],
        }


@dataclass(frozen=True)
class Check:
    """Whether a new spend fits: `reasons` says why not, naming what is left."""

    fits: bool
    reasons: tuple[str, ...]
    total: Standing
    buyer: Standing | None = None


def _pair(limit: Limit) -> str:
    return f"epsilon {limit.epsilon:g}, delta {limit.delta:g}"


# ------------------------------------------------------------------------------ OpenDP
def _opendp() -> Any:
    import opendp.mod as dp_mod

    # User measurements carry each recorded spend's privacy map (a constant at the unit
    # distance, one record); OpenDP's combinators then do the composition.
    dp_mod.enable_features("contrib", "honest-but-curious")
    return dp_mod


def _constant(measure: Any, loss: Any) -> Any:
    import opendp.domains as dp_domains
    import opendp.measurements as dp_m
    import opendp.metrics as dp_metrics

    _opendp()
    return dp_m.make_user_measurement(
        dp_domains.atom_domain(T="bool"),
        dp_metrics.symmetric_distance(),
        measure,
        lambda x: x,
        lambda d_in: loss,
        TO="bool",
    )


def _approx(epsilon: float, delta: float) -> Any:
    import opendp.measures as dp_measures

    return _constant(dp_measures.approximate(dp_measures.max_divergence()), (epsilon, delta))


def _rho_of(spend: Spend) -> float:
    """A spend's zCDP cost: its own rho, or a pure spend's by OpenDP's conversion."""
    import opendp.combinators as dp_c
    import opendp.measures as dp_measures

    if spend.rho is not None:
        return spend.rho
    pure = _constant(dp_measures.max_divergence(), spend.epsilon)
    return float(dp_c.make_pureDP_to_zCDP(pure).map(1))


def basic(spends: Sequence[Spend]) -> Composed:
    """OpenDP's basic composition of the spends as (epsilon, delta)-DP measurements."""
    import opendp.combinators as dp_c

    if not spends:
        return Composed(0.0, 0.0, "basic")
    composed = dp_c.make_composition([_approx(s.epsilon, s.delta) for s in spends])
    epsilon, delta = composed.map(1)
    return Composed(float(epsilon), float(delta), "basic")


def zcdp(spends: Sequence[Spend], delta: float) -> Composed | None:
    """zCDP composition of the spends that have a zCDP cost, converted at `delta` less the
    others' deltas, basically composed with the others; None when no delta is left to convert
    at (or nothing to compose in zCDP)."""
    import opendp.combinators as dp_c
    import opendp.measures as dp_measures

    concentrated = [s for s in spends if s.rho is not None or s.delta == 0]
    others = [s for s in spends if not (s.rho is not None or s.delta == 0)]
    if not concentrated:
        return None
    rest = basic(others)
    at = delta - rest.delta
    if at <= 0:
        return None
    zero = dp_measures.zero_concentrated_divergence()
    composed = dp_c.make_composition([_constant(zero, _rho_of(s)) for s in concentrated])
    rho = float(composed.map(1))
    if rho == 0:
        return Composed(rest.epsilon, rest.delta, "zCDP", 0.0)
    converted = dp_c.make_fix_delta(dp_c.make_zCDP_to_approxDP(composed), delta=at)
    epsilon, used = converted.map(1)
    whole = basic([Spend(MOCK_JOB, "", float(epsilon), float(used)), *others])
    return Composed(whole.epsilon, whole.delta, "zCDP", rho)


def compose(spends: Sequence[Spend], rule: Composition, limit: Limit) -> Composed:
    """What `spends` cost together under `rule` (for `zcdp`, the tighter valid figure within
    `limit.delta`)."""
    plain = basic(spends)
    if rule == "basic":
        return plain
    concentrated = zcdp(spends, limit.delta)
    if concentrated is None:
        return plain
    plain_fits = plain.delta <= limit.delta
    if not plain_fits or concentrated.epsilon < plain.epsilon:
        return concentrated
    return plain


def _within(composed: Composed, limit: Limit) -> bool:
    # A hair of slack for float sums (1e-12 relative), never more.
    slack = 1e-12 * max(limit.epsilon, 1.0)
    return composed.epsilon <= limit.epsilon + slack and composed.delta <= limit.delta + 1e-18


# ------------------------------------------------------------------------------ the ledger
def counted(spends: Iterable[Spend], spec: BudgetSpec, now: float) -> list[Spend]:
    """The spends that count now: all of them, or, with a window, the recent ones (the mock
    data's always)."""
    if spec.window_s is None:
        return list(spends)
    start = now - spec.window_s
    return [s for s in spends if s.job == MOCK_JOB or s.at > start]


def retry_at(spends: Iterable[Spend], spec: BudgetSpec, now: float) -> float | None:
    """When the oldest counted job spend leaves the window (a refusal may fit then)."""
    if spec.window_s is None:
        return None
    times = [s.at for s in counted(spends, spec, now) if s.job != MOCK_JOB]
    return min(times) + spec.window_s if times else None


def standing(
    spec: BudgetSpec, spends: Iterable[Spend], now: float, buyer: str | None = None
) -> Standing:
    """The dataset's budget (or, with `buyer`, that buyer's per-buyer budget) now."""
    live = counted(spends, spec, now)
    limit: Limit = spec
    if buyer is not None:
        assert spec.per_buyer is not None
        limit = spec.per_buyer
        live = [s for s in live if s.buyer.lower() == buyer.lower()]
    return Standing(Limit(epsilon=limit.epsilon, delta=limit.delta),
                    compose(live, spec.composition, limit), tuple(live))  # fmt: skip


def check(spec: BudgetSpec, spends: Sequence[Spend], new: Spend | None, now: float) -> Check:
    """Whether `new` (None: a job without differential privacy) fits the total and, when set,
    its buyer's budget; each reason that it does not names what is left."""
    total = standing(spec, spends, now)
    buyer = standing(spec, spends, now, new.buyer) if new and spec.per_buyer else None
    if new is None:
        reason = (
            "without differential privacy epsilon is unbounded; this dataset has a privacy "
            f"budget ({total.describe()}): only a job with DP can spend it"
        )
        return Check(False, (reason,), total)
    asked = f"epsilon {new.epsilon:g}, delta {new.delta:g}"
    reasons = []
    after = standing(spec, [*spends, new], now)
    if not _within(after.spent, after.limit):
        reasons.append(
            f"{asked} exceeds this dataset's privacy budget under {total.spent.rule} "
            f"composition: {total.describe()}"
        )
    if buyer is not None:
        mine = standing(spec, [*spends, new], now, new.buyer)
        if not _within(mine.spent, mine.limit):
            reasons.append(
                f"{asked} exceeds buyer {new.buyer}'s privacy budget on this dataset under "
                f"{buyer.spent.rule} composition: {buyer.describe()}"
            )
    return Check(not reasons, tuple(reasons), total, buyer)


def job_cost(plan: Any) -> tuple[float, float, float | None]:
    """A job's (epsilon, delta, rho) from its noise plan (`compute.dp.NoisePlan`): what
    OpenDP's maps report for each group's mechanism, summed (basic composition over the
    groups, as the result reports it); rho from OpenDP's zCDP map of each discrete Gaussian
    (None for the Laplace: pure DP)."""
    import opendp.measurements as dp_m

    from compute.dp import _space

    spent = plan.spent(1)
    rho = None
    if plan.mechanism == "gaussian":
        domain, metric = _space("gaussian")
        rho = sum(
            float(dp_m.make_gaussian(domain, metric, scale=g.scale).map(g.sensitivity))
            for g in plan.groups
        )
    return float(spent.epsilon), float(spent.delta), rho


def mock_spend(dataset: Any) -> Spend | None:
    """The dp mock data's spend, when the owner chose DP mock data (its `mock_spend`)."""
    cost = getattr(dataset, "mock_spend", None)
    if cost is None:
        return None
    epsilon, delta = cost
    return Spend(MOCK_JOB, "", float(epsilon), float(delta), None, 0.0, "dp mock data")
