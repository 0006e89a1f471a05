"""Payout, slash and settlement arithmetic, in integer token base units, as the contract does it.

Pure functions: values in, values out. Every split sums exactly to what it splits, and the result
does not depend on the order of the input. Results are dicts in a canonical order (keys sorted
by their lowercased spelling) that leave out accounts that get 0, so a payout dict can go
straight into `PayoutTree.build` and a slash dict straight into a `Result` (the contract wants
slashes sorted by ascending `datasetId`, which for equal-length 0x-hex ids is this order).

Keys are opaque strings (accounts for payouts, dataset ids for slashes): nothing here checks that
they are addresses, but two keys that differ only in letter case are rejected, because they would
name one account twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from compute.economics import BPS, MAX_FEE_BPS, committee_fee
from market.valuation._checks import (
    UINT16_MAX,
    check_amount,
    check_bps,
    check_unique_keys,
)
from market.valuation.errors import (
    EmptyPayoutsError,
    InconsistentInputError,
    InvalidWeightError,
    PayoutAboveBudgetError,
    SlashedToPayoutsTooHighError,
)

SCORE_SCALE = 10**9
"""Fixed-point scale that turns influence scores into integer weights (see `score_weight`)."""


def split_by_weights(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split `total` in proportion to integer `weights`; the parts sum to exactly `total`.

    Each account first gets `floor(total * weight / sum(weights))`; the few units left over
    (fewer than the number of accounts) go one each to the accounts with the largest remainders
    of that division, ties broken by the lowercased account in ascending order (largest-remainder
    method). Zero weights, and positive weights whose part is 0, are left out of the result.
    `total == 0` gives `{}`. Raises `InvalidWeightError` for a negative or non-int weight and
    `EmptyPayoutsError` when `total > 0` but no weight is positive (nobody to pay: refund instead).
    """
    check_amount(total, "total")
    check_unique_keys(weights, "account")
    for account, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise InvalidWeightError(
                f"weight of {account} must be a non-negative int, got {weight!r}; "
                "use positive_influence_payouts for float or negative scores"
            )
    positive = {account: weight for account, weight in weights.items() if weight > 0}
    if total == 0:
        return {}
    if not positive:
        raise EmptyPayoutsError(
            f"cannot split {total} among {len(weights)} accounts with no positive weight; "
            "pay nothing and refund the buyer instead"
        )
    weight_sum = sum(positive.values())
    parts: dict[str, int] = {}
    remainders: dict[str, int] = {}
    for account, weight in positive.items():
        parts[account], remainders[account] = divmod(total * weight, weight_sum)
    leftover = total - sum(parts.values())  # < len(positive): each remainder is < weight_sum
    by_remainder = sorted(positive, key=lambda account: (-remainders[account], account.lower()))
    for account in by_remainder[:leftover]:
        parts[account] += 1
    return {account: parts[account] for account in _canonical(parts) if parts[account] > 0}


def equal_split(total: int, accounts: Iterable[str]) -> dict[str, int]:
    """Split `total` equally; the `total % len(accounts)` units left over go one each to the
    first accounts in lowercased order. Same rules and errors as `split_by_weights`."""
    accounts = list(accounts)
    check_unique_keys(accounts, "account")
    return split_by_weights(total, dict.fromkeys(accounts, 1))


def score_weight(score: int | float) -> int:
    """The integer weight of an influence score: `round(score * SCORE_SCALE)`, half to even.

    An int is scaled exactly (which keeps the ratios between int scores exact); a float is
    scaled from its exact binary value (`Fraction(score)`), so the result never depends on
    floating-point rounding of the product. NaN, infinities and non-numbers are rejected."""
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise InvalidWeightError(
            f"a score must be an int or a float, got {type(score).__name__} {score!r}"
        )
    if isinstance(score, float) and not math.isfinite(score):
        raise InvalidWeightError(f"a score must be finite, got {score!r}")
    return round(Fraction(score) * SCORE_SCALE)


def positive_influence_payouts(total: int, scores: Mapping[str, int | float]) -> dict[str, int]:
    """Split `total` among accounts with a positive score, in proportion to `score_weight`.

    Zero and negative scores (and positive ones of at most 0.5e-9, which weigh 0) earn nothing. When
    no score is positive the result is `{}`: nothing is paid and the whole pool goes back to the
    buyer as refund. Otherwise the parts sum to exactly `total` (see `split_by_weights`)."""
    check_amount(total, "total")
    check_unique_keys(scores, "account")
    weights = {account: score_weight(score) for account, score in scores.items()}
    positive = {account: weight for account, weight in weights.items() if weight > 0}
    if not positive:
        return {}
    return split_by_weights(total, positive)


def slash_cap(stake: int, signed_max_slash_bps: int, job_max_slash_bps: int) -> int:
    """The most the contract lets a job slash from `stake`:
    `stake * min(signed maxSlashBps, job maxSlashBps) // 10_000`."""
    check_amount(stake, "stake")
    check_bps(signed_max_slash_bps, "signed maxSlashBps", UINT16_MAX)
    check_bps(job_max_slash_bps, "job maxSlashBps")
    return stake * min(signed_max_slash_bps, job_max_slash_bps) // BPS


def slash_amounts(
    stakes: Mapping[str, int],
    caps_bps: Mapping[str, int],
    job_max_slash_bps: int,
    severity_bps: Mapping[str, int],
) -> dict[str, int]:
    """Slash each key of `severity_bps` by `stake * min(severity, signed cap, job max) // 10_000`.

    `stakes` and `caps_bps` (each provider's signed `Participation.maxSlashBps`, 0..65535 as
    the contract's uint16) must cover every key of `severity_bps`: a provider can only be
    slashed within a cap it signed. Severities and the job maximum are 0..10_000 bps. A slash
    never exceeds `slash_cap` (same floor division, and min() of the same bps). Keys whose slash
    is 0 are left out; the rest come in canonical order (ascending `datasetId` for 0x ids)."""
    check_bps(job_max_slash_bps, "job maxSlashBps")
    check_unique_keys(severity_bps, "slashed key")
    slashes: dict[str, int] = {}
    for key, severity in severity_bps.items():
        check_bps(severity, f"severity of {key}")
        if key not in stakes or key not in caps_bps:
            missing = "stake" if key not in stakes else "signed maxSlashBps"
            raise InconsistentInputError(
                f"{key} has a severity but no {missing}; only a staked provider that signed a "
                "Participation cap can be slashed, so drop it from severity_bps"
            )
        stake = check_amount(stakes[key], f"stake of {key}")
        cap_bps = check_bps(caps_bps[key], f"signed maxSlashBps of {key}", UINT16_MAX)
        amount = slash_cap(stake, min(severity, cap_bps), job_max_slash_bps)
        if amount > 0:
            slashes[key] = amount
    return {key: slashes[key] for key in _canonical(slashes)}


@dataclass(frozen=True, slots=True)
class Settlement:
    """Where the money of a finalized job goes, as `Marketplace.finalize` moves it.

    Conservation: `sum(fee_per_member) + payout_total + refund == budget`,
    `claimable + burned == payout_total + slashed_total`. The buyer's refund never depends on
    slashes: slashed tokens go to payouts or are burned, never to the buyer."""

    budget: int
    fee: int
    """`committee_fee(budget, feeBps)`, shared by the committee members that accepted the job."""
    fee_per_member: tuple[int, ...]
    """`fee // n` for each of the n members that accepted (signers are paid at `finalize`,
    the others claim theirs); the remainder `fee % n` is refunded."""
    payout_total: int
    """Payouts funded from the budget (`Result.payoutTotal`)."""
    refund: int
    """`budget - payout_total - sum(fee_per_member)`, back to the buyer."""
    slashed_total: int
    slashed_to_payouts: int
    """Slashed tokens added to the payout pool (`Result.slashedToPayouts`)."""
    claimable: int
    """`payout_total + slashed_to_payouts`: what the payout tree must sum to."""
    burned: int
    """`slashed_total - slashed_to_payouts`."""


def settlement(
    budget: int,
    fee_bps: int,
    n_accepted: int,
    payout_total: int,
    slashed_total: int,
    slashed_to_payouts: int,
) -> Settlement:
    """Compute a finalize's fee, fee shares (`n_accepted` members accepted the job), refund,
    claimable pool and burn.

    Raises `InvalidBasisPointsError` if `fee_bps` is above `MAX_FEE_BPS`, `InconsistentInputError`
    for fewer than one accepted member, `PayoutAboveBudgetError` if
    `payout_total > budget - fee` and `SlashedToPayoutsTooHighError` if
    `slashed_to_payouts > slashed_total` (the contract reverts on both)."""
    check_amount(budget, "budget")
    check_bps(fee_bps, "feeBps", MAX_FEE_BPS)
    if isinstance(n_accepted, bool) or not isinstance(n_accepted, int) or n_accepted < 1:
        raise InconsistentInputError(
            f"n_accepted must be a positive int (the members that accepted), got {n_accepted!r}"
        )
    check_amount(payout_total, "payout_total")
    check_amount(slashed_total, "slashed_total")
    check_amount(slashed_to_payouts, "slashed_to_payouts")
    fee = committee_fee(budget, fee_bps)
    if payout_total > budget - fee:
        raise PayoutAboveBudgetError(
            f"payout_total {payout_total} exceeds the {budget - fee} left of budget {budget} "
            f"after the {fee} fee; scale the payouts down to at most that"
        )
    if slashed_to_payouts > slashed_total:
        raise SlashedToPayoutsTooHighError(
            f"slashed_to_payouts {slashed_to_payouts} exceeds slashed_total {slashed_total}; "
            "only slashed tokens can be added to payouts"
        )
    each = fee // n_accepted
    return Settlement(
        budget=budget,
        fee=fee,
        fee_per_member=(each,) * n_accepted,
        payout_total=payout_total,
        refund=budget - payout_total - each * n_accepted,
        slashed_total=slashed_total,
        slashed_to_payouts=slashed_to_payouts,
        claimable=payout_total + slashed_to_payouts,
        burned=slashed_total - slashed_to_payouts,
    )


def _canonical(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=str.lower)
