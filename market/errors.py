"""The root of the errors `market/`'s libraries raise on purpose.

`ChainError` (the chain and its contracts' custom errors), `WalletError` (keystores),
`DocumentError` (proposals and result documents, and fetching them), `StorageError`
(content-addressed storage), `ValuationError` (payout and valuation inputs, with TIP's
`TipError`) and `InvalidSignature` (EIP-712 signatures the contract would refuse) derive from
`MarketError`, each keeping the builtin base it had (`ValueError`, `ConnectionError`, ...)."""

from __future__ import annotations


class MarketError(Exception):
    """An error of the market's libraries; the message says what went wrong and what to do."""
