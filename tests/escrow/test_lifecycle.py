"""The pure job state machine: only Posted → Finalized | Aborted | Expired, within the windows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.escrow.lifecycle import (
    TRANSITIONS,
    JobTransitionError,
    Windows,
    allowed_actions,
    next_state,
)
from market.escrow.types import JobState

W = Windows(deadline=1_000, settlement_grace=100, report_window=50)


def test_windows():
    assert (W.settlement_closes_at, W.expirable_from, W.report_closes_at) == (1_100, 1_101, 1_150)


@pytest.mark.parametrize(
    ("now", "actions"),
    [(0, ["finalize", "abort"]), (1_100, ["finalize", "abort"]), (1_101, ["expire"])],
)
def test_allowed_actions_follow_the_clock(now, actions):
    assert allowed_actions(JobState.POSTED, W, now) == actions


@given(state=st.sampled_from(JobState), action=st.sampled_from(["finalize", "abort", "expire"]),
       now=st.integers(0, 2_000))  # fmt: skip
def test_every_transition_leaves_posted_and_terminal_states_are_final(state, action, now):
    try:
        target = next_state(state, action, W, now)
    except JobTransitionError:
        assert action not in allowed_actions(state, W, now)
        return
    assert action in allowed_actions(state, W, now)
    assert state is JobState.POSTED
    assert target is TRANSITIONS[(state, action)]
    assert target in (JobState.FINALIZED, JobState.ABORTED, JobState.EXPIRED)
    for follow_up in ("finalize", "abort", "expire"):
        with pytest.raises(JobTransitionError):
            next_state(target, follow_up, W, now)


def test_error_messages_say_what_to_do():
    with pytest.raises(JobTransitionError, match="only expire"):
        next_state(JobState.POSTED, "finalize", W, 1_101)
    with pytest.raises(JobTransitionError, match="from 1101"):
        next_state(JobState.POSTED, "expire", W, 1_100)
