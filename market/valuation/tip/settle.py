"""From decrypted provider scores to money: payouts for positive influence, slashes for harm.

Pure glue over `market.valuation.payouts` (nothing here re-implements its arithmetic):

- the fee and the conservation checks come from `settlement`;
- the payout pool (the budget less the fee, plus the slashed tokens when they go to payouts) is
  split among datasets with a positive score by `positive_influence_payouts` (integer weights
  from `score_weight`, largest remainder, exact sum), then summed per owner account;
- harmful datasets (score below `-harm_threshold`) get a severity in basis points, and
  `slash_amounts` turns it into a slash within `min(severity, the provider's signed
  Participation.maxSlashBps, the job's maxSlashBps)` of its stake.

Severity: `10_000 * min(1, |score| / (full_slash_at * reference))`, where the reference is the
largest positive score (harm as large as the best provider's help takes the whole cap), or the
largest harm when no score is positive. Slashed tokens go to the positive contributors, or are
burned when `slashed_to_payouts` is false or nobody contributed positively; never to the buyer.
When no score is positive nothing is paid and the pool is refunded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from compute.economics import BPS, payout_pool
from market.valuation._checks import check_unique_keys
from market.valuation.errors import InconsistentInputError, InvalidWeightError
from market.valuation.payouts import (
    Settlement,
    positive_influence_payouts,
    settlement,
    slash_amounts,
)


@dataclass(frozen=True)
class TipSettlement:
    payouts: dict[str, int]
    """Owner account -> amount: the payout tree's leaves (sums to `settlement.claimable`)."""
    payouts_by_dataset: dict[str, int]
    slashes: dict[str, int]
    """Dataset id -> slashed amount, canonical order (the contract's ascending datasetId)."""
    severity_bps: dict[str, int]
    settlement: Settlement


def severity_from_scores(
    scores: Mapping[str, float], harm_threshold: float = 0.0, full_slash_at: float = 1.0
) -> dict[str, int]:
    """Severity in bps of every dataset whose score is below `-harm_threshold` (see module)."""
    _check_scores(scores)
    if not full_slash_at > 0 or harm_threshold < 0:
        raise InconsistentInputError("full_slash_at must be positive and harm_threshold >= 0")
    harmful = {key: -float(s) for key, s in scores.items() if s < -harm_threshold}
    if not harmful:
        return {}
    positive = [float(s) for s in scores.values() if s > 0]
    reference = full_slash_at * (max(positive) if positive else max(harmful.values()))
    return {
        key: math.floor(BPS * min(1.0, harm / reference)) if reference > 0 else BPS
        for key, harm in harmful.items()
    }


def settle_valuation(
    scores: Mapping[str, float],
    owners: Mapping[str, str],
    *,
    budget: int,
    fee_bps: int,
    n_accepted: int,
    stakes: Mapping[str, int],
    caps_bps: Mapping[str, int],
    job_max_slash_bps: int,
    slashed_to_payouts: bool = True,
    harm_threshold: float = 0.0,
    full_slash_at: float = 1.0,
) -> TipSettlement:
    """Payouts and slashes of a valuation job from its providers' scores (dataset id -> score)
    and owners (dataset id -> account paid). Every dataset with a positive payout needs an
    owner; every harmful one needs a stake and a signed cap (`slash_amounts` checks).

    Slashed tokens go to the positive contributors whose owners were not slashed in this job:
    an owner never recovers its own slash through another of its datasets."""
    _check_scores(scores)
    check_unique_keys(scores, "dataset")
    settlement(budget, fee_bps, n_accepted, 0, 0, 0)  # checks the terms before any arithmetic
    pool = payout_pool(budget, fee_bps)
    severity = severity_from_scores(scores, harm_threshold, full_slash_at)
    slashes = slash_amounts(stakes, caps_bps, job_max_slash_bps, severity)
    slashed_total = sum(slashes.values())
    has_positive = any(s > 0 for s in scores.values())
    slashed_owners = {owners.get(d) for d in slashes}
    unslashed = {d: s for d, s in scores.items() if owners.get(d) not in slashed_owners}
    by_dataset = positive_influence_payouts(pool, scores)
    payout_total = pool if by_dataset else 0
    by_slash = (
        positive_influence_payouts(slashed_total, unslashed)
        if slashed_to_payouts and has_positive and slashed_total
        else {}
    )
    to_payouts = slashed_total if by_slash else 0
    for dataset, amount in by_slash.items():
        by_dataset[dataset] = by_dataset.get(dataset, 0) + amount
    payouts: dict[str, int] = {}
    for dataset, amount in by_dataset.items():
        if dataset not in owners:
            raise InconsistentInputError(f"dataset {dataset} earns {amount} but has no owner")
        owner = owners[dataset]
        payouts[owner] = payouts.get(owner, 0) + amount
    check_unique_keys(payouts, "owner account")
    result = settlement(budget, fee_bps, n_accepted, payout_total, slashed_total, to_payouts)
    assert sum(payouts.values()) == result.claimable
    return TipSettlement(
        payouts={key: payouts[key] for key in sorted(payouts, key=str.lower)},
        payouts_by_dataset=by_dataset,
        slashes=slashes,
        severity_bps=severity,
        settlement=result,
    )


def _check_scores(scores: Mapping[str, float]) -> None:
    for key, score in scores.items():
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            raise InvalidWeightError(f"score of {key} must be a finite number, got {score!r}")
