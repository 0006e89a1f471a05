"""`forecast`: a forecast tournament (the Numerai construction). Model holders stake on the job
and share their predictions for a published set of T future targets before the deadline; the
buyer posts the outcomes after the proposal's `resolution_time` (never before, and never before
the deadline); the committee scores each submission alone under sharing, its correlation with
the outcomes (`compute.scoring`: predictions and outcomes standardized, the score the mean of
their products); each holder earns `stake x clip(payout_factor x score, +-cap)`: positive from
the pool (pro rata when they would exceed it), negative slashed within the holder's signed cap
and burned. Nobody sees one model's predictions, and the predictions are committed (shared)
before the outcomes exist. docs/forecast.md says what each party learns and can do.

Integer settlement (`settle`): each score is an exact fraction of its reconstructed integer
total, the payout factor the exact value of its float, and every amount floors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field

from compute.economics import BPS
from compute.encoding import FieldSpec
from compute.errors import ReductionError
from compute.kinds.base import JobKind, LateInput, Problem, Settlement
from compute.messages import Result as RoundResult
from compute.messages import RoundConfig
from compute.proposal import Proposal, _Strict
from compute.reduce import ReduceOp, Reduction
from compute.scoring import ScorePlan, ScoringError, encode_outcomes

MAX_TARGETS = 2**16
"""Most targets one tournament scores: the scores' products then fit GF(2^61 - 1) whatever the
outcomes (`ScorePlan.check_capacity` checks the actual ones exactly)."""
PREDICTION_BOUND = 4.0
"""Standardized predictions are clipped to [-4, 4] standard deviations."""
PREDICTION_FIELD = FieldSpec("prediction", -PREDICTION_BOUND, PREDICTION_BOUND, scale=2**16)
MAX_PAYOUT_FACTOR = 1_000.0


def _source(value: str) -> str:
    if value != "buyer" and not value.startswith("https://"):
        raise ValueError("must be 'buyer' or the https:// URL of the public source")
    return value


class ForecastSpec(_Strict):
    """The tournament's terms."""

    targets: Annotated[int, Field(ge=2, le=MAX_TARGETS)]
    """T, the number of published targets; a holder shares one prediction for each, in order."""
    targets_uri: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """Where the targets (their ids, in order, and what each one is) are published."""
    resolution_time: Annotated[int, Field(gt=0, le=2**64 - 1)]
    """Unix seconds from which the buyer may post the outcomes (at or after the deadline)."""
    payout_factor: Annotated[float, Field(gt=0, le=MAX_PAYOUT_FACTOR, allow_inf_nan=False)]
    """A score (a correlation, in [-1, 1]) times this is the share of its stake a holder earns
    or loses, before the clip."""
    cap_bps: Annotated[int, Field(ge=1, le=BPS)]
    """The clip, in basis points of the stake, both ways; at most `economics.max_slash_bps`."""
    outcome_source: Annotated[str, AfterValidator(_source)] = "buyer"
    """Who the outcomes come from: the buyer, or the https:// public source the buyer copies
    them from (so anyone can check the ones it posts); the committee takes the buyer's post."""


class Outcomes(_Strict):
    """The late input: the targets' outcomes, in target order, as the buyer signs them."""

    job_id: Annotated[int, Field(ge=0)]
    values: Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=2)]


class Forecast(JobKind):
    name = "forecast"
    title = "a forecast tournament: predictions scored under sharing against later outcomes"
    payout_rule = "forecast_score"
    fixed: ClassVar = {
        ("map", "function"): "standardized_predictions",
        ("map", "output"): {"fields": []},
        ("reduce", "op"): "sum",
        ("economics", "payout_rule"): "forecast_score",
    }
    late_input = LateInput("outcomes", "buyer", "resolution_time", Outcomes)

    def problems(self, proposal: Proposal) -> Sequence[Problem]:
        terms: ForecastSpec = proposal.forecast
        out: list[Problem] = []
        if terms.resolution_time < proposal.deadline:
            out.append(
                (
                    ("forecast", "resolution_time"),
                    f"{terms.resolution_time} is before the deadline {proposal.deadline}: the "
                    "outcomes must come after every prediction is in; set it >= the deadline",
                )
            )
        if terms.cap_bps > proposal.economics.max_slash_bps:
            out.append(
                (
                    ("forecast", "cap_bps"),
                    f"{terms.cap_bps} exceeds economics.max_slash_bps "
                    f"({proposal.economics.max_slash_bps}), the most a holder may lose; raise "
                    "max_slash_bps or lower cap_bps",
                )
            )
        if proposal.map.filter is not None:
            out.append(
                (("map", "filter"), "a forecast shares one prediction per target; no filter")
            )
        if proposal.privacy.dp is not None:
            out.append(
                (
                    ("privacy", "dp"),
                    "forecast jobs add no DP noise (each score is released exactly); remove dp",
                )
            )
        return out

    def columns(self, proposal: Proposal) -> tuple[str, ...]:
        return ("prediction",)

    def reduction(self, proposal: Proposal) -> Reduction:
        """One record per holder: its T standardized predictions."""
        return Reduction(
            ReduceOp.SUM,
            PREDICTION_FIELD,
            width=proposal.forecast.targets,
            max_values=proposal.reduce.max_values,
        )

    def round_config(
        self, proposal: Proposal, job_id: str, inputs: Mapping[str, Any]
    ) -> RoundConfig:
        """Without `outcomes` the plan is pending (the providers share, the committee
        collects); with them (an `Outcomes` or their values) the scores' weights are set."""
        targets = proposal.forecast.targets
        outcomes = inputs.get("outcomes")
        weights = None
        if outcomes is not None:
            values = outcomes.values if isinstance(outcomes, Outcomes) else list(outcomes)
            if len(values) != targets:
                raise ReductionError(f"{len(values)} outcomes for the job's {targets} targets")
            try:
                weights = encode_outcomes(values)
            except ScoringError as error:
                raise ReductionError(str(error)) from None
        return RoundConfig(
            job_id=job_id,
            reduction=self.reduction(proposal),
            scheme=proposal.scheme(),
            min_participants=proposal.privacy.min_participants,
            scoring=ScorePlan(targets, PREDICTION_FIELD.scale, weights),
        )

    def late_after(self, proposal: Proposal) -> int | None:
        return proposal.forecast.resolution_time

    # --- settlement ----------------------------------------------------------------------

    def settle(
        self,
        proposal: Proposal,
        config: RoundConfig,
        outcome: RoundResult,
        pool: int,
        stakes: Mapping[str, int],
        caps: Mapping[str, int],
    ) -> Settlement:
        plan = config.scoring
        assert plan is not None
        totals = dict(
            zip(outcome.participants, (int(t) for t in outcome.aggregate.total), strict=True)
        )
        return settle_scores(
            proposal.forecast,
            {d: plan.score(t) for d, t in totals.items()},
            pool,
            stakes,
            caps,
            proposal.economics.max_slash_bps,
        )

    def summary(
        self, proposal: Proposal, config: RoundConfig, outcome: RoundResult
    ) -> Mapping[str, Any]:
        return {
            "scores": {
                d: float(s) for d, s in zip(outcome.participants, outcome.values, strict=True)
            },
            "targets": config.reduction.width,
        }

    def describe(self, summary: Mapping[str, Any]) -> list[str]:
        forecast = summary.get("forecast", summary)
        scores = forecast.get("scores", {})
        payouts = forecast.get("payouts", {})
        slashes = forecast.get("slashes", {})
        lines = [f"forecast over {forecast.get('targets', '?')} targets, score = correlation"]
        for dataset in sorted(scores, key=lambda d: -scores[d]):
            money = (
                f"slashed {slashes[dataset]}" if dataset in slashes
                else f"earns {payouts.get(dataset, '0')}"
            )  # fmt: skip
            lines.append(f"  {dataset}: score {scores[dataset]:+.4f}, {money}")
        return lines

    template_options: ClassVar = ("targets", "resolution_time", "payout_factor", "cap_bps")
    template_needs: ClassVar = {
        "targets": "how many published targets each holder predicts, in order (publish "
        "their ids where the proposal's targets_uri points)",
        "resolution_time": "from when the buyer may post the outcomes: a unix or ISO time at "
        "or after the deadline `bounty post` sets, or a duration from now (30d)",
    }

    def template(
        self,
        *,
        targets: int,
        resolution_time: int,
        payout_factor: float = 1.0,
        cap_bps: int = 2_000,
        **options: Any,
    ) -> dict[str, Any]:
        """The tournament's terms; the job's `max_slash_bps` is the clip `cap_bps`."""
        return {
            "title": "A forecast tournament, scored by correlation with the outcomes",
            "economics": {"max_slash_bps": int(cap_bps)},
            "forecast": {
                "targets": int(targets),
                "targets_uri": None,
                "resolution_time": int(resolution_time),
                "payout_factor": float(payout_factor),
                "cap_bps": int(cap_bps),
                "outcome_source": "buyer",
            },
        }


def settle_scores(
    terms: ForecastSpec,
    scores: Mapping[str, Fraction],
    pool: int,
    stakes: Mapping[str, int],
    caps: Mapping[str, int],
    max_slash_bps: int,
) -> Settlement:
    """The payout rule in integers: each dataset's `stake x clip(payout_factor x score, +-cap)`,
    floored; the positive ones paid from `pool`, scaled down pro rata (floored) when they sum to
    more (the remainder goes back to the buyer: the contract refunds what the result does not
    pay); the negative ones slashed within the dataset's signed cap and the job's
    `max_slash_bps`, and burned. Datasets in ascending id order."""
    factor, cap = Fraction(terms.payout_factor), Fraction(terms.cap_bps, BPS)
    earned: dict[str, int] = {}
    slashes: dict[str, int] = {}
    clipped: dict[str, str] = {}
    for dataset in sorted(scores):
        raw = factor * scores[dataset]
        share = max(-cap, min(cap, raw))
        clipped[dataset] = str(share)
        stake = stakes[dataset]
        if share > 0:
            earned[dataset] = int(stake * share)
        elif share < 0:
            limit = stake * min(caps.get(dataset, 0), max_slash_bps) // BPS
            amount = min(int(stake * -share), limit)
            if amount > 0:
                slashes[dataset] = amount
    wanted = sum(earned.values())
    scaled = wanted > pool
    payouts = {d: a * pool // wanted for d, a in earned.items()} if scaled else dict(earned)
    payouts = {d: a for d, a in payouts.items() if a > 0}
    return Settlement(
        payouts=payouts,
        slashes=slashes,
        slashed_to_payouts=0,
        summary={
            "rule": "stake x clip(payout_factor x score, +-cap)",
            "payout_factor": terms.payout_factor,
            "cap_bps": terms.cap_bps,
            "shares_of_stake": clipped,
            "earned_before_scaling": {d: str(a) for d, a in earned.items()},
            "scaled_to_pool": scaled,
            "payouts": {d: str(a) for d, a in payouts.items()},
            "slashes": {d: str(a) for d, a in slashes.items()},
            "slashed_to": "burn",
        },
    )


FORECAST = Forecast()


class ForecastProposal(Proposal):
    kind: Literal["forecast"]
    forecast: ForecastSpec
    """The tournament's terms."""
    job_kind: ClassVar[JobKind] = FORECAST


FORECAST.proposal_class = ForecastProposal
