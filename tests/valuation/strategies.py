"""Hypothesis strategies shared by the valuation tests."""

from __future__ import annotations

from eth_utils.address import to_checksum_address
from hypothesis import strategies as st

UINT256_MAX = 2**256 - 1

addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
"""EIP-55 checksummed addresses."""

amounts = st.one_of(
    st.integers(min_value=1, max_value=10**24),
    st.integers(min_value=1, max_value=UINT256_MAX),
)
"""Positive uint256 token amounts, mostly realistic, sometimes huge."""


def payouts(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[dict[str, int]]:
    """Payout dicts with distinct accounts and positive amounts."""
    return st.dictionaries(addresses, amounts, min_size=min_size, max_size=max_size)
