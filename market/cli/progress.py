"""What `market bounty wait` says while a job moves: one line on stderr each time the job reaches
a new stage (posted, accepted by k of n members, submissions closed, for a valuation job the
buyer's report and who took it, settling, settled), and the same line again, marked "still", at
most once a minute while nothing changes. Stdout stays for the command's result.

The chain says where a job is up to its deadline; after it, the committee's members say (the
round's phase, `GET /jobs/{id}`, and a valuation job's report, `GET /jobs/{id}/valuation`),
asked in the committee's order until one answers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

from market.cli.common import format_time
from market.escrow import JobState, JobView
from nodes import api
from nodes.client import HeavyClient

SETTLED = {
    JobState.FINALIZED: "finalized: `market bounty result {job}` shows the result",
    JobState.ABORTED: "aborted: the budget went back to the buyer",
    JobState.EXPIRED: "expired: the budget went back to the buyer",
}


def member_status(http: Any, endpoints: Sequence[str], path: str) -> tuple[int, Any] | None:
    """(HTTP status, JSON body) from the first member that answers `path`; None if none does."""
    for endpoint in endpoints:
        try:
            response = HeavyClient(endpoint, http, timeout=5).get(path)
            body = response.json()
        except (requests.RequestException, ValueError):
            continue
        if response.status_code < 500:
            return response.status_code, body
    return None


def stage(view: JobView, now: float, endpoints: Sequence[str], http: Any) -> str:
    """One line: where the job is now."""
    job = view.job_id
    if view.state is not JobState.POSTED:
        return f"job {job} " + SETTLED.get(view.state, view.state.name.lower()).format(job=job)
    if not view.drawn:
        return f"job {job} posted; its committee is drawn from the next block"
    accepted = f"accepted by {len(view.accepted)} of {view.committee_size} committee members"
    status = member_status(http, endpoints, api.job(job))
    collecting = status is None or status[0] != 200 or status[1].get("phase") == "collecting"
    if now <= view.deadline and collecting:
        if len(view.accepted) < view.committee_size and now <= view.accept_by:
            return f"job {job} posted: {accepted} (acceptance closes {format_time(view.accept_by)})"
        return f"job {job} {accepted}; submissions close {format_time(view.deadline)}"
    closed = f"job {job} submissions closed at the deadline ({format_time(view.deadline)})"
    if status is not None and status[0] == 200 and status[1].get("waiting_for"):
        name, by = status[1]["waiting_for"], status[1].get("decide_by")
        late = LATE_COMMANDS.get(name, f"the buyer's {name}").format(job=job)
        by_text = f"; without it the committee aborts at {format_time(int(by))}" if by else ""
        return f"{closed}; waiting for {late}{by_text}"
    if status is not None and status[0] == 200 and status[1].get("settlement") not in (
        None, "awaiting_outcome",
    ):  # fmt: skip
        return f"{closed}; settling: the committee signs and finalizes its result"
    return f"{closed}; the committee is reducing the shares"


LATE_COMMANDS = {
    "query": "the buyer's query shares (`market valuation query {job}`)",
    "outcomes": "the buyer's outcomes (`market bounty outcomes {job} FILE`)",
}
"""How the buyer posts each kind's late input, for the progress line."""


class Progress:
    """Says each new stage once, and a stage that lasts again every `every` seconds."""

    def __init__(
        self,
        say: Callable[[str], None],
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.say, self.every, self.clock = say, every, clock
        self._last: str | None = None
        self._said_at = 0.0

    def update(self, line: str) -> None:
        now = self.clock()
        if line != self._last:
            self.say(line)
        elif now - self._said_at >= self.every:
            self.say(f"still: {line}")
        else:
            return
        self._last, self._said_at = line, now
