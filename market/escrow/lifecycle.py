"""The job state machine, as data (mirror of the contract's rules; no I/O).

`Posted → Finalized | Aborted | Expired`, each transition at most once. Time windows come from the
deployment config; `now` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from market.escrow.types import JobState


class JobTransitionError(ValueError):
    """An action that the job's state or the clock does not allow."""


TRANSITIONS: dict[tuple[JobState, str], JobState] = {
    (JobState.POSTED, "finalize"): JobState.FINALIZED,
    (JobState.POSTED, "abort"): JobState.ABORTED,
    (JobState.POSTED, "expire"): JobState.EXPIRED,
}
"""The only transitions there are."""


@dataclass(frozen=True)
class Windows:
    """The times that matter to one job, from its deadline and the deployment config."""

    deadline: int
    settlement_grace: int
    report_window: int

    @property
    def settlement_closes_at(self) -> int:
        """Last second at which `finalize` or `abort` is accepted."""
        return self.deadline + self.settlement_grace

    @property
    def expirable_from(self) -> int:
        """First second at which `expire` is accepted."""
        return self.settlement_closes_at + 1

    @property
    def report_closes_at(self) -> int:
        """Last second at which `reportEquivocation` is accepted."""
        return self.settlement_closes_at + self.report_window


def next_state(state: JobState, action: str, windows: Windows, now: int) -> JobState:
    """The state after `action` at time `now`, or JobTransitionError saying why not."""
    target = TRANSITIONS.get((state, action))
    if target is None:
        raise JobTransitionError(f"cannot {action} a job that is {state.name.lower()}")
    if action in ("finalize", "abort") and now > windows.settlement_closes_at:
        raise JobTransitionError(
            f"settlement closed at {windows.settlement_closes_at}; the job can only expire now"
        )
    if action == "expire" and now < windows.expirable_from:
        raise JobTransitionError(f"the job can expire from {windows.expirable_from}")
    return target


def allowed_actions(state: JobState, windows: Windows, now: int) -> list[str]:
    """Every action that `next_state` would accept now."""
    actions = []
    for (from_state, action), _ in TRANSITIONS.items():
        if from_state != state:
            continue
        try:
            next_state(state, action, windows, now)
        except JobTransitionError:
            continue
        actions.append(action)
    return actions
