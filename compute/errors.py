"""Errors raised by `compute`.

One root, `ComputeError`. Each subclass also inherits the built-in it resembles (as web3.py's
`Web3ValueError(Web3Exception, ValueError)`), so callers may catch either the package's own class
or the built-in. Messages say what was wrong and what to do about it. The HTTP layer and the CLI
translate these into status codes and exit codes; nothing inside `compute` catches them broadly.
"""

from __future__ import annotations


class ComputeError(Exception):
    """Root of every error raised by `compute`."""


# --- encoding -------------------------------------------------------------------------------


class EncodingError(ComputeError, ValueError):
    """A field specification or a value cannot be encoded: bounds out of order, a scale that is
    not a positive int, a NaN in the data, a value of the wrong shape."""


class EncodingOverflowError(EncodingError):
    """A sum could leave the range the ring or field holds exactly (it would wrap silently).

    Raised before any data is shared, when a proposal asks for more values, a larger scale or
    wider bounds than fit; the message names the limit and what to lower."""


# --- sharing --------------------------------------------------------------------------------


class SharingError(ComputeError, ValueError):
    """Shares or sharing parameters are unusable: a threshold above the number of holders,
    holder indices out of range, shares of different shapes, an unknown scheme."""


class MissingSharesError(SharingError):
    """Fewer shares than the scheme needs to reconstruct (all of them for additive sharing,
    `threshold` of them for Shamir)."""


class ShareInconsistencyError(SharingError):
    """More shares than the threshold were given and they do not lie on one polynomial of the
    scheme's degree: at least one share is wrong.

    `holders` names the holders whose shares were found wrong when the redundancy is enough to
    tell (at least `threshold + 2` shares for one wrong share); otherwise it is empty and
    `suspects` lists every holder that might be the wrong one."""

    def __init__(self, message: str, holders: tuple[int, ...], suspects: tuple[int, ...]) -> None:
        super().__init__(message)
        self.holders = holders
        self.suspects = suspects

    @property
    def holder(self) -> int | None:
        """The one wrong holder, when exactly one was named."""
        return self.holders[0] if len(self.holders) == 1 else None


# --- reduce and differential privacy --------------------------------------------------------


class ReductionError(ComputeError, ValueError):
    """A reduction is malformed: an unknown operation, histogram bins on a vector field,
    weights missing for a weighted sum, contributions of the wrong length."""


class PrivacyError(ComputeError, ValueError):
    """Differential-privacy terms are unusable: epsilon not positive and finite, delta outside
    [0, 1), or noise too large for the ring's headroom."""


# --- the aggregation round ------------------------------------------------------------------


class ProtocolError(ComputeError):
    """A message or event that the round cannot accept. The round's state is unchanged; the
    caller (the HTTP layer, the simulator) decides whether to reject, log or drop it."""


class WrongJobError(ProtocolError, ValueError):
    """The message belongs to another job, or is addressed to another heavy node."""


class MalformedMessageError(ProtocolError, ValueError):
    """A share or partial of the wrong shape or type, or a sender outside the committee."""


class DuplicateMessageError(ProtocolError, ValueError):
    """A message delivered twice (a replay, or a retry after a lost acknowledgement): the first
    one stands. The HTTP layer may answer a retry of an identical message as a success."""


class DuplicateSubmissionError(DuplicateMessageError):
    """A dataset submitted twice for one job."""


class LateSubmissionError(ProtocolError, RuntimeError):
    """A submission after the node closed submissions for the job."""


class UnexpectedEventError(ProtocolError, RuntimeError):
    """An event that the round's state table does not allow in the current phase."""
