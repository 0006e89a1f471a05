"""`valuation`: the value of each provider's rows for the buyer's model (TIP). The buyer
shares its query `q` with the committee (committed in the proposal, share by share, so it
cannot change after posting: the late input `query`, sealed to each member); each provider
shares `G_p`, its rows' summed projected gradient; the committee opens each provider's total
influence `q . G_p` (`compute.products`) and pays by positive influence, slashing harmful
datasets within their caps. No party decides the totals alone, and nothing waits for the buyer.
Each provider also sends its per-row scores encrypted under the buyer's CKKS key (TIP's view):
the buyer decrypts them for its own insight; they never touch the payouts. The map (TenSEAL
and the gradients) and the settlement are node-side (`nodes/kinds.py`, `nodes/results.py`):
they need `market.valuation.tip`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from compute.kinds.base import JobKind, LateInput, Problem
from compute.messages import RoundConfig
from compute.products import G_BITS, MAX_K, ProductPlan, gradient_reduction
from compute.proposal import MAX_COMMITTEE, BlobRef, Proposal, _cross, _Strict
from compute.reduce import Reduction

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Sealed = Annotated[str, Field(min_length=1, max_length=8 * MAX_K * 2 + 1024)]


class CommitteeQuery(_Strict):
    """The buyer's query as the committee multiplies it (`compute.products`): its scales and
    the SHA-256 commitment to each committee position's share (`products.commit_share`)."""

    q_bits: Annotated[int, Field(ge=-64, le=128)]
    """`q` is shared at `2^q_bits` (its encoded norm at most 2^24)."""
    g_bits: Annotated[int, Field(ge=0, le=G_BITS)]
    """Providers share `G_p` at `2^g_bits`, each coordinate clipped to +-2^24."""
    commitments: Annotated[list[Digest], Field(min_length=1, max_length=MAX_COMMITTEE)]
    """One per committee position, in order."""


class QueryShares(_Strict):
    """The late input of a valuation job: each committee position's share of `q` with its
    nonce, sealed to that member's registered key (base64), in committee order."""

    job_id: Annotated[int, Field(ge=0)]
    shares: Annotated[list[Sealed], Field(min_length=1, max_length=MAX_COMMITTEE)]


class ValuationSpec(_Strict):
    """What a `valuation` (TIP) job asks of each provider, and how its scores become money.

    Each provider takes its rows (those the map's filter keeps, with no missing feature or
    label), shares their summed projected gradient with the committee, and sends their scores
    encrypted under the buyer's key; the committee opens each total `q . G_p` and settles by
    `market.valuation.tip.settle`."""

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
    """`Enc(q)`: the buyer's own view (per-row scores it decrypts), never the payouts."""
    committee: CommitteeQuery
    """`q` for the committee's totals, which the payouts follow."""
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
    # The map selects the rows (the filter, no missing value); each provider's contribution
    # is its summed gradient, which the committee multiplies by the query, never sums.
    fixed: ClassVar = {
        ("map", "function"): "summed_gradient",
        ("reduce", "op"): "sum",
        ("reduce", "scheme"): "shamir",
        ("economics", "payout_rule"): "influence",
    }
    late_input = LateInput("query", "buyer", "posting", QueryShares)

    def problems(self, proposal: Proposal) -> list[Problem]:
        spec: ValuationSpec = proposal.valuation
        n, t = proposal.committee_size, proposal.threshold
        out: list[Problem] = []
        if 2 * t - 1 > n:
            out.append((("reduce", "threshold"), f"Shamir {t}-of-{n} cannot multiply (products "
                        f"need 2t-1 = {2 * t - 1} members); a valuation needs an odd committee "
                        f"with threshold (n + 1) / 2: 3 members at 2, 5 at 3"))  # fmt: skip
        if len(spec.committee.commitments) != n:
            out.append((("valuation", "committee", "commitments"),
                        f"{len(spec.committee.commitments)} share commitments for a committee of "
                        f"{n}; publish the query for {n} members"))  # fmt: skip
        k = _k(spec)
        if not 1 <= k <= MAX_K:
            out.append((("valuation", "tip"), f"a projection of k = {k}; at most {MAX_K}"))
        if proposal.privacy.dp is not None:
            out.append((("privacy", "dp"), "valuation jobs add no DP noise; remove dp"))
        return out

    def reduction(self, proposal: Proposal) -> Reduction:
        """One record per provider: its summed projected gradient (k numbers)."""
        spec: ValuationSpec = proposal.valuation
        return gradient_reduction(_k(spec), spec.committee.g_bits)

    def round_config(
        self, proposal: Proposal, job_id: str, inputs: Mapping[str, Any]
    ) -> RoundConfig:
        """Pending until this member's share of the query (`inputs["query"]`, opened by its
        node: `nodes.kinds.ValuationSide.own_input`) is known."""
        spec: ValuationSpec = proposal.valuation
        share = inputs.get("query")
        plan = ProductPlan(
            _k(spec), spec.committee.q_bits, spec.committee.g_bits,
            share if isinstance(share, np.ndarray) else None,
        )  # fmt: skip
        return RoundConfig(
            job_id=job_id,
            reduction=self.reduction(proposal),
            scheme=proposal.scheme(),
            min_participants=proposal.privacy.min_participants,
            products=plan,
        )

    def late_after(self, proposal: Proposal) -> int | None:
        return 0  # from posting on: the round closes only once the members hold their shares

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
        Semi-honest by default: with a committee of exactly 2t-1 a wrong product cannot be
        detected (docs/valuation.md)."""
        ValuationSpec.model_validate(valuation)
        return {
            "title": "How much does your data help my model?",
            "reduce": {"threat_model": "semi-honest", "scheme": "shamir"},
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


def _k(spec: ValuationSpec) -> int:
    projection = spec.tip.get("projection")
    k = projection.get("k") if isinstance(projection, dict) else None
    return k if isinstance(k, int) and not isinstance(k, bool) else 0
