"""The contract's fee arithmetic, once: what a job's `budget` and `feeBps` leave for the committee
and for the providers, in integer token base units and with `Marketplace.sol`'s rounding (every
division floors, as Solidity's does).

The proposal's economics (`compute.proposal`), the provider's policy (`compute.policy`), the
heavy node's minimum fee and the result it signs (`nodes`) and the settlement that checks a
result the way `Marketplace.finalize` would (`market.valuation.payouts`) all call these, so
that none of them can round differently from the chain.
"""

from __future__ import annotations

BPS = 10_000
"""Basis points in one whole (`Marketplace.BPS`)."""
MAX_FEE_BPS = 5_000
"""`Marketplace.MAX_FEE_BPS`: the committee's fee is at most half the budget."""


def committee_fee(budget: int, fee_bps: int) -> int:
    """The committee's whole fee: `budget * feeBps / BPS` (`Marketplace._settle`)."""
    return budget * fee_bps // BPS


def payout_pool(budget: int, fee_bps: int) -> int:
    """What the budget leaves for payouts after the fee: `budget - fee`, the most a result's
    `payoutTotal` may be."""
    return budget - committee_fee(budget, fee_bps)


def fee_share(budget: int, fee_bps: int, members: int) -> int:
    """One member's share of the fee when `members` accepted the job: `fee / members`
    (`Marketplace._feeEach`); the remainder goes back to the buyer."""
    return committee_fee(budget, fee_bps) // members
