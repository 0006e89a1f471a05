"""`valuation`: the value of each provider's rows for the buyer's model (TIP): each provider
scores its rows against the buyer's encrypted query and sends the encrypted scores beside its
share of the row count; after the deadline the buyer decrypts the participants' scores and
reports each dataset's total to the committee, which pays by positive influence and slashes
harmful datasets within their caps. The map (TenSEAL) and the settlement on the buyer's report
are node-side (`nodes/kinds.py`): they need `market.valuation.tip`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from compute.kinds.base import JobKind
from compute.proposal import BlobRef, Proposal, _cross, _Strict

MAX_DECRYPT_WINDOW = 2**32 - 1


MAX_DECRYPT_WINDOW = 2**32 - 1


class ValuationSpec(_Strict):
    """What a `valuation` (TIP) job asks of each provider, and how its scores become money.

    Each provider scores its rows (those the map's filter keeps, with no missing feature or
    label) against the buyer's encrypted query and sends the encrypted scores with its share of
    the row count; after the deadline the buyer decrypts the participants' scores and reports
    each dataset's total to the committee, which settles by `market.valuation.tip.settle`."""

    tip: dict[str, Any]
    """The TIP terms (`market.valuation.tip.job.TipTerms` JSON): model, projection, curvature,
    damping, HE backend and parameters, threat model, sign convention."""
    features: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128)]],
        Field(min_length=1, max_length=4096),
    ]
    """The feature columns, in the model's input order."""
    label: Annotated[str, Field(min_length=1, max_length=128)]
    """The column holding class labels 0 .. classes - 1."""
    model: BlobRef
    """The model release: parameters and the preprocessing (`tip.release.ModelRelease`)."""
    context: BlobRef
    """The buyer's public CKKS context (no secret key)."""
    query: BlobRef
    """`Enc(q)`."""
    decrypt_window: Annotated[int, Field(ge=1, le=MAX_DECRYPT_WINDOW)]
    """Seconds after the deadline in which the buyer must report the decrypted scores; without a
    report (or with two different ones) the pool is split equally among the participants."""
    max_examples: Annotated[int, Field(ge=1, le=2**24)] = 100_000
    """Most rows one provider may score."""
    harm_threshold: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    """Scores below `-harm_threshold` are harmful (slashed within the caps)."""
    full_slash_at: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    """Harm at which the whole cap is slashed, relative to the best positive score."""
    slashed_to: Literal["payouts", "burn"] = "payouts"
    """Where slashed stake goes: to the positive contributors, or burned (never the buyer)."""

    @field_validator("features")
    @classmethod
    def _unique_features(cls, features: list[str]) -> list[str]:
        repeated = sorted({f for f in features if features.count(f) > 1})
        if repeated:
            raise ValueError(f"feature names must be unique; repeated: {', '.join(repeated)}")
        return features

    @model_validator(mode="after")
    def _label_apart(self) -> ValuationSpec:
        problem = (
            [(("label",), f"{self.label!r} is also a feature; the label must be its own column")]
            if self.label in self.features
            else []
        )
        _cross(problem, "ValuationSpec", self.label)
        return self


class Valuation(JobKind):
    name = "valuation"
    title = "the value of each provider's rows for the buyer's model (TIP, CKKS-encrypted)"
    payout_rule = "influence"
    # The secure reduce counts the rows scored: the committee learns how many rows were scored
    # in all, and the scores travel CKKS-encrypted beside it.
    fixed: ClassVar = {
        ("map", "function"): "row_count",
        ("reduce", "op"): "count",
        ("economics", "payout_rule"): "influence",
    }

    def columns(self, proposal: Proposal) -> tuple[str, ...]:
        """The features, in the model's input order, and the label."""
        return (*proposal.valuation.features, proposal.valuation.label)

    template_options: ClassVar = ("valuation", "max_slash_bps")
    template_needs: ClassVar = {
        "valuation": "publish the buyer's model, context and query with `market valuation "
        "publish ... --json > terms.json` (or let it write the whole proposal with "
        "--proposal FILE), then pass --valuation terms.json"
    }

    def template(
        self, *, valuation: Mapping[str, Any], max_slash_bps: int = 0, **options: Any
    ) -> dict[str, Any]:
        """`valuation`: the TIP terms `market valuation publish` prints (checked as a
        `ValuationSpec`, kept as given); `max_slash_bps`: the most a harmful dataset loses.
        The round is semi-honest: the scores travel CKKS-encrypted beside a count."""
        ValuationSpec.model_validate(valuation)
        return {
            "title": "How much does your data help my model?",
            "reduce": {"threat_model": "semi-honest"},
            "economics": {"max_slash_bps": max_slash_bps},
            "valuation": dict(valuation),
        }


VALUATION = Valuation()


class ValuationProposal(Proposal):
    kind: Literal["valuation"]
    valuation: ValuationSpec
    """The TIP terms."""
    job_kind: ClassVar[JobKind] = VALUATION


VALUATION.proposal_class = ValuationProposal
