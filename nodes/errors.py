"""The root of the errors `nodes/` raises, and the heavy node's refusals.

Every error a module of `nodes/` raises on purpose derives from `NodeError` (keeping the
builtin base it had, such as `ValueError`, so that existing `except` clauses still hold):
`DatasetError`, `JobSpecError`, `EnsembleJobError`, `ValuationError`, `WireError`,
`Duplicate`, `DoubleSigning`, `SubmissionRefused`, and `Rejected` here.

`Rejected` is a request the heavy node refuses; its subclass says why, and `nodes.api.STATUS`
(the one table, used by the service's one exception handler) says the HTTP status it is
answered with. The message is the `detail` of the JSON answer.
"""

from __future__ import annotations


class NodeError(Exception):
    """An error of the light or heavy node; the message says what went wrong and what to do."""


class Rejected(NodeError):
    """A request the heavy node refuses, with nothing stored; `detail` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def status(self) -> int:
        """The HTTP status it is answered with (`nodes.api.STATUS`)."""
        from nodes.api import status_of

        return status_of(self)


class BadRequest(Rejected):
    """Well-formed, but not what the job or the round takes (a wrong job, a refused share)."""


class Unauthenticated(Rejected):
    """Not signed by whom it must be (the dataset's owner, a committee member, the buyer)."""


class FeeTooLow(Rejected):
    """The job's fee share is below what this node serves for."""


class Forbidden(Rejected):
    """Signed by someone the chain does not allow to send it (an unstaked or slashed dataset)."""


class NotFound(Rejected):
    """A job this node does not serve, or something it does not hold (yet)."""


class Conflict(Rejected):
    """Too late, or contradicting what the node already holds (a second submission)."""


class Malformed(Rejected):
    """A body that does not parse as the route's message."""


class TooMany(Rejected):
    """More than the node keeps for a job (signatures over too many digests)."""


class Unavailable(Rejected):
    """The node cannot answer yet (it is starting); retry shortly."""
