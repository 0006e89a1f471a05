"""Input checks shared by the payout rules and the payout tree: token amounts, accounts, basis
points. Each returns the checked value (normalized where there is one canonical form) or raises
a `ValuationError` that says what to fix."""

from __future__ import annotations

import re
from collections.abc import Iterable

from eth_utils.address import to_checksum_address

from compute.economics import BPS
from market.valuation.errors import (
    DuplicateAccountError,
    InvalidAddressError,
    InvalidAmountError,
    InvalidBasisPointsError,
    MalformedInputError,
)

UINT256_MAX = 2**256 - 1
UINT16_MAX = 2**16 - 1

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def check_amount(value: object, what: str, *, positive: bool = False) -> int:
    """Return `value` if it is an int token amount in [0, 2^256) (or (0, 2^256) if `positive`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmountError(
            f"{what} must be an int in token base units, got {type(value).__name__} {value!r}; "
            "convert decimals to base units before calling"
        )
    if value < 0 or (positive and value == 0):
        bound = "positive" if positive else "non-negative"
        raise InvalidAmountError(f"{what} must be {bound}, got {value}")
    if value > UINT256_MAX:
        raise InvalidAmountError(
            f"{what} is {value}, which does not fit in a uint256 (max 2^256-1)"
        )
    return value


def checksum_account(account: object) -> str:
    """Return the EIP-55 checksummed form of a 0x-prefixed 20-byte hex address.

    All-lowercase and all-uppercase addresses carry no checksum and are accepted; a mixed-case
    address must carry a correct checksum (a wrong one usually means a typo)."""
    if not isinstance(account, str) or not _HEX_ADDRESS.fullmatch(account):
        raise InvalidAddressError(
            f"account {account!r} is not an address: expected '0x' followed by 40 hex digits"
        )
    checksummed = to_checksum_address(account)
    body = account[2:]
    if body != body.lower() and body != body.upper() and account != checksummed:
        raise InvalidAddressError(
            f"account {account} has a wrong EIP-55 checksum (expected {checksummed}); "
            "check it for a typo, or pass it all-lowercase to skip the checksum"
        )
    return checksummed


def check_unique_keys(keys: Iterable[str], what: str) -> None:
    """Reject keys that are equal once lowercased (two spellings of one address)."""
    seen: dict[str, str] = {}
    for key in keys:
        if not isinstance(key, str):
            raise MalformedInputError(f"{what} {key!r} must be a str, got {type(key).__name__}")
        folded = key.lower()
        if folded in seen:
            raise DuplicateAccountError(
                f"{what} {key} appears twice (also as {seen[folded]}); merge the two entries"
            )
        seen[folded] = key


def check_bps(value: object, what: str, maximum: int = BPS) -> int:
    """Return `value` if it is an int number of basis points in [0, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidBasisPointsError(
            f"{what} must be an int number of basis points, got {type(value).__name__} {value!r}"
        )
    if not 0 <= value <= maximum:
        raise InvalidBasisPointsError(f"{what} must be between 0 and {maximum} bps, got {value}")
    return value
