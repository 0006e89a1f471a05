"""Errors raised by `market.valuation`.

One root, `ValuationError`. Each subclass also inherits the built-in it resembles (as web3.py's
`Web3ValueError(Web3Exception, ValueError)`), so callers may catch either the package's own class
or the built-in. Messages say what was wrong and what to do about it.
"""

from __future__ import annotations

from market.errors import MarketError


class ValuationError(MarketError):
    """Root of every error raised by `market.valuation`."""


class MalformedInputError(ValuationError, TypeError):
    """An input does not have the expected shape, such as a payout that is not an
    `(account, amount)` pair."""


class InvalidAmountError(ValuationError, ValueError):
    """A token amount is not an int, is negative or zero where it must be positive, or does not
    fit in a uint256."""


class InvalidAddressError(ValuationError, ValueError):
    """An account is not a 20-byte hex address, or is mixed-case with a wrong EIP-55 checksum."""


class DuplicateAccountError(ValuationError, ValueError):
    """The same account (compared case-insensitively) appears twice in one input."""


class EmptyPayoutsError(ValuationError, ValueError):
    """A payout tree needs at least one leaf, or an amount must be split among nobody."""


class InvalidWeightError(ValuationError, ValueError):
    """A weight or score is negative, not finite, or of a type the rule does not accept."""


class InvalidBasisPointsError(ValuationError, ValueError):
    """A basis-point value is outside the range the contract accepts."""


class InconsistentInputError(ValuationError, ValueError):
    """Inputs contradict each other or a rule the contract enforces, such as a slash for a
    provider without a signed cap, or a settlement without signers."""


class PayoutAboveBudgetError(ValuationError, ValueError):
    """Payouts exceed what the budget holds after the fee (the contract would revert with
    `MarketplacePayoutAboveBudget`)."""


class SlashedToPayoutsTooHighError(ValuationError, ValueError):
    """More slashed tokens are routed to payouts than were slashed (the contract would revert with
    `MarketplaceSlashedToPayoutsTooHigh`)."""


class InvalidNodeError(ValuationError, ValueError):
    """A Merkle root, leaf or proof element is not 32 bytes."""


class InvalidTreeDumpError(ValuationError, ValueError):
    """A serialized payout tree is malformed or does not prove the values it lists."""


class UnknownAccountError(ValuationError, KeyError):
    """An account has no leaf in the payout tree."""

    def __str__(self) -> str:
        # KeyError.__str__ would show the repr of the message (quotes and escapes).
        return str(self.args[0]) if self.args else ""
