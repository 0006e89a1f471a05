"""The bounty lifecycle: typed contract values, EIP-712 messages, the job state machine and the
escrow client."""

from market.escrow.client import EscrowClient, Totals
from market.escrow.eip712 import Domain
from market.escrow.types import JobParams, JobState, JobView, Result, Slash, SlashConsent

__all__ = [
    "Domain",
    "EscrowClient",
    "JobParams",
    "JobState",
    "JobView",
    "Result",
    "Slash",
    "SlashConsent",
    "Totals",
]
