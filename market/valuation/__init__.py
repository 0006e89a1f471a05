"""Measured contribution and what it pays: payout and slash rules, and the payout Merkle tree.

The modules here are pure (values in, values out; no chain, disk or network) and count money in
int token base units throughout.
"""

from market.valuation.errors import ValuationError
from market.valuation.merkle import PayoutTree, leaf_hash, verify_proof
from market.valuation.payouts import (
    Settlement,
    equal_split,
    positive_influence_payouts,
    settlement,
    slash_amounts,
    slash_cap,
    split_by_weights,
)

__all__ = [
    "PayoutTree",
    "Settlement",
    "ValuationError",
    "equal_split",
    "leaf_hash",
    "positive_influence_payouts",
    "settlement",
    "slash_amounts",
    "slash_cap",
    "split_by_weights",
    "verify_proof",
]
