"""What the nodes of an aggregation round agree on beforehand, and the messages they exchange.

All messages are frozen dataclasses that name their job, and those between nodes name their
sender and recipient, so that a transport (HTTP, or the in-process simulator) only has to
deliver them; `compute.round` holds the state machines that produce and consume them. Messages
that carry arrays compare by identity (`eq=False`): compare their fields instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from compute.dp import NoisePlan, PrivacySpent
from compute.ensemble import EnsembleFit, EnsemblePlan
from compute.errors import ReductionError
from compute.products import ProductPlan, product_scheme
from compute.reduce import Abort, Aggregate, ReduceOp, Reduction
from compute.scoring import ScorePlan
from compute.sharing import Scheme

NoiseSampler = Callable[[], NDArray[np.int64]]
"""Draws one heavy node's noise vector (`functools.partial(dp.sample_noise, plan)`)."""


@dataclass(frozen=True)
class RoundConfig:
    """Everything the nodes of one round agree on beforehand (from the proposal)."""

    job_id: str
    reduction: Reduction
    scheme: Scheme
    min_participants: int
    """Fewest datasets whose contributions may be reconstructed together."""
    privacy: NoisePlan | None = None
    """Calibrated DP noise, when the proposal asks for DP."""
    ensemble: EnsemblePlan | None = None
    """Ensemble jobs: the weights are fitted in the round, from the validation statistics."""
    scoring: ScorePlan | None = None
    """Scored jobs (forecasts): each participant's contribution is scored alone against public
    weights (`compute.scoring`); no aggregate of the contributions is reconstructed."""
    products: ProductPlan | None = None
    """Valuation jobs: each participant's contribution (its summed gradient) is multiplied
    with the buyer's shared query (`compute.products`); only those totals are opened."""

    def __post_init__(self) -> None:
        if self.min_participants < 1:
            raise ReductionError("min_participants must be at least 1")
        weighted = self.reduction.op is ReduceOp.WEIGHTED_SUM
        if weighted != (self.ensemble is not None):
            raise ReductionError(
                "a weighted sum is an ensemble's (its weights are fitted in the round): it needs "
                "an ensemble plan, and only a weighted sum takes one"
            )
        if self.ensemble is not None:
            if self.reduction.length != self.ensemble.layout.length:
                raise ReductionError("the reduction does not fit the ensemble's layout")
            if self.privacy is not None:
                raise ReductionError("an ensemble round adds no DP noise")
        if self.scoring is not None:
            if self.privacy is not None or self.ensemble is not None or weighted:
                raise ReductionError("a scored round adds no noise and fits no weights")
            if self.reduction.length != self.scoring.length:
                raise ReductionError("the score weights do not fit the reduction's length")
            self.scoring.check_capacity(self.reduction.field.bound, self.scheme.capacity)
        if self.products is not None:
            if self.privacy is not None or self.ensemble is not None or self.scoring is not None:
                raise ReductionError("a product round adds no noise, fits and scores nothing")
            if self.scheme.name != "shamir":
                raise ReductionError(
                    f"{self.scheme.name} sharing cannot multiply; a valuation job needs shamir"
                )
            product_scheme(self.scheme.n, self.scheme.threshold)
            if self.reduction.length != self.products.k:
                raise ReductionError("the query does not fit the reduction's length")
        if self.privacy is not None and self.privacy.length != self.reduction.length:
            raise ReductionError("the noise plan was calibrated for another reduction")
        margin = self.privacy.margin(self.scheme.n) if self.privacy is not None else 0
        self.reduction.check_capacity(self.scheme.capacity, margin)

    @property
    def committee(self) -> tuple[int, ...]:
        """Heavy node indices, 1..n (also their Shamir evaluation points)."""
        return tuple(range(1, self.scheme.n + 1))


# --- messages and events -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Submission:
    """Light node to heavy node: one share of one dataset's contribution."""

    job_id: str
    dataset_id: str
    recipient: int
    share: NDArray[np.uint64]
    seed: bytes | None = None
    """The short seed `share` expands from, when it is pure randomness (seed compression:
    the provider sends this in its place; `compute.sharing.share_seeded`)."""


@dataclass(frozen=True)
class CloseSubmissions:
    """Driver to heavy node: the submission deadline has passed."""

    job_id: str


@dataclass(frozen=True)
class PeerUnavailable:
    """Driver to heavy node: stop waiting for `node`; ignore what it sends from now on."""

    job_id: str
    node: int


@dataclass(frozen=True, eq=False)
class Agreement:
    """Heavy node to peer: the datasets the sender holds shares of, with DP the recipient's
    share of the sender's noise, and in a product round its shares of the sender's masks."""

    job_id: str
    sender: int
    recipient: int
    dataset_ids: frozenset[str]
    noise_share: NDArray[np.uint64] | None = None
    mask_share: NDArray[np.uint64] | None = None
    """Product rounds: the recipient's shares of the sender's masks, one per dataset in the
    sender's view (in sorted order) and one for the query's norm (`compute.products`)."""


@dataclass(frozen=True, eq=False)
class Partial:
    """Heavy node to peer: the sender's partial over the participant set it agreed on."""

    job_id: str
    sender: int
    recipient: int
    participants: tuple[str, ...]
    noise_from: tuple[int, ...]
    value: NDArray[np.uint64]


@dataclass(frozen=True, eq=False)
class Statistic:
    """Ensemble rounds, heavy node to peer: at stage 0 the sender's shares of each
    participant's validation statistic (participants' order; in a scored round, of each
    participant's score), from which the candidate blends are computed; at stage 1 its
    shares of each candidate blend's validation probabilities (`compute.ensemble.blend_partial`),
    from which the weights are chosen."""

    job_id: str
    sender: int
    recipient: int
    participants: tuple[str, ...]
    value: NDArray[np.uint64]
    stage: int = 0


Event = Submission | CloseSubmissions | PeerUnavailable | Agreement | Statistic | Partial
Outgoing = Agreement | Statistic | Partial


@dataclass(frozen=True, eq=False)
class Result:
    """The outcome of a round that reconstructed its aggregate."""

    job_id: str
    aggregate: Aggregate
    privacy: PrivacySpent | None
    """Epsilon and delta spent, when DP noise was added."""
    fit: EnsembleFit | None = None
    """Ensemble rounds: the models' validation accuracy and fitted weights (participants'
    order); `aggregate.values` are then the ensemble's test probabilities, row by row."""

    @property
    def values(self) -> NDArray[np.float64]:
        return self.aggregate.values

    @property
    def participants(self) -> tuple[str, ...]:
        return self.aggregate.participants


Outcome = Result | Abort
