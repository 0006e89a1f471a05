"""How amounts and times read: the token's base units as DATA with every decimal they have, and
unix times as UTC dates. Below every other module of the chain package, so the nodes, the revert
messages and the CLI all say them the same way."""

from __future__ import annotations

import time

TOKEN = 10**18
"""One DATA in base units (18 decimals)."""


def format_tokens(amount: int) -> str:
    """`12_500_000_000_000_000_000` → `"12.5 DATA"`, exactly."""
    whole, frac = divmod(amount, TOKEN)
    text = f"{whole:,}"
    if frac:
        text += "." + f"{frac:018d}".rstrip("0")
    return f"{text} DATA"


def format_utc(unix: int) -> str:
    """`1796143091` → `"2026-12-01 16:38:11 UTC"`."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))
