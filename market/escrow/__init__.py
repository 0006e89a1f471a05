"""The bounty lifecycle: typed contract values (the job's states among them), EIP-712 messages
and the escrow client. The job state machine itself is the contract's."""

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
