"""Unbonding and equivocation arithmetic (mirror of the contract's rules; integers, no I/O).
A job's slash cap is `market.valuation.payouts.slash_cap`."""

from __future__ import annotations

from dataclasses import dataclass

from compute.economics import BPS


def dataset_slashable(unstake_requested_at: int, job_posted_at: int) -> bool:
    """A dataset that asked to unbond at or before a job was posted could not join that job."""
    return unstake_requested_at == 0 or unstake_requested_at > job_posted_at


def unlock_at(unstake_requested_at: int, unbonding_period: int) -> int:
    """When an unbonding stake can be withdrawn."""
    if unstake_requested_at == 0:
        raise ValueError("the stake is not unbonding; request an unstake first")
    return unstake_requested_at + unbonding_period


def can_withdraw(unstake_requested_at: int, unbonding_period: int, now: int) -> bool:
    return unstake_requested_at != 0 and now >= unlock_at(unstake_requested_at, unbonding_period)


def minimum_unbonding_period(max_job_window: int, settlement_grace: int, report_window: int) -> int:
    """The shortest unbonding period the contract accepts: strictly longer than every window in
    which a stake staked before a job can still be slashed for it."""
    return max_job_window + settlement_grace + report_window + 1


def liveness_penalty(stake: int, penalty: int) -> int:
    """What an expired job takes from each committee member."""
    return min(stake, penalty)


@dataclass(frozen=True)
class EquivocationSlash:
    slashed: int
    reward: int
    burned: int


def equivocation_slash(stake: int, slash_bps: int, reporter_reward_bps: int) -> EquivocationSlash:
    """A heavy node caught signing two results: what it loses, what the reporter gets, the rest
    burned."""
    slashed = stake * slash_bps // BPS
    reward = slashed * reporter_reward_bps // BPS
    return EquivocationSlash(slashed, reward, slashed - reward)
