"""The aggregation round as a sans-I/O state machine (in the style of h11's `_state.py`).

Messages in, messages out: no sockets, clocks, disks or threads. The driver (the HTTP service,
or `compute.simulation` for 1,000 nodes in one process) delivers each message to the node it is
addressed to, and tells a heavy node when the deadline has passed (`CloseSubmissions`) and
when to stop waiting for a peer (`PeerUnavailable`); that is all the time a node ever sees.

The messages and the round's configuration are in `compute.messages`.

Light node (`LightNodeRound`): encode and clip its records, compute its contribution, share it,
one `Submission` per heavy node. The shares are made once and kept, so a retry resends the
same messages (fresh shares of one value to the same holders must never be mixed).

Heavy node (`HeavyNodeRound`), phases and transitions all in `TRANSITIONS`:

| phase      | input                         | next      | what the node does                  |
|------------|-------------------------------|-----------|-------------------------------------|
| COLLECTING | `Submission`                  | COLLECTING| keep the share (once per dataset)   |
| COLLECTING | `Agreement`, `Partial`        | COLLECTING| keep a peer's early message         |
| COLLECTING | `CloseSubmissions`            | AGREEING  | send its `Agreement` to every peer  |
| AGREEING   | `Agreement`, `Partial`        | AGREEING  | keep                                |
| AGREEING   | views complete                | COMBINING | agree; send its `Partial` to peers  |
| AGREEING   | too few nodes or participants | ABORTED   | `Abort`                             |
| AGREEING   | views complete, ensemble      | FITTING   | agree; send its `Statistic` to peers|
| FITTING    | `Agreement`, `Statistic`, `Partial` | FITTING | keep                            |
| FITTING    | statistics complete, one model| COMBINING | fit the weights; send its `Partial` |
| FITTING    | statistics complete, blends   | SELECTING | send its stage-1 `Statistic`        |
| FITTING    | too few or wrong statistics   | ABORTED   | `Abort`, naming a cheater if it can |
| SELECTING  | `Agreement`, `Statistic`, `Partial` | SELECTING | keep                          |
| SELECTING  | blends complete               | COMBINING | choose the weights; send `Partial`  |
| SELECTING  | too few or wrong blends       | ABORTED   | `Abort`, naming a cheater if it can |
| AGREEING   | views complete, scoring       | SCORING   | agree; send its scores `Statistic`  |
| SCORING    | `Agreement`, `Statistic`, `Partial` | SCORING | keep                            |
| SCORING    | scores complete               | DONE      | reconstruct each score: `Result`    |
| SCORING    | too few or wrong scores       | ABORTED   | `Abort`, naming a cheater if it can |
| COMBINING  | `Partial`                     | COMBINING | keep                                |
| COMBINING  | partials complete             | DONE      | reconstruct and decode: `Result`    |
| COMBINING  | too few or wrong partials     | ABORTED   | `Abort`, naming a cheater if it can |
| any        | `PeerUnavailable`             | same      | stop waiting for that peer          |
| COMBINING, DONE, ABORTED | `Agreement`, `Statistic`, `Partial` | same | late: ignored    |

"Views complete" means every peer has sent its `Agreement` or been declared unavailable;
"partials complete" the same for `Partial` among the peers that agreed. The participant set is
the intersection of the dataset sets of the nodes that agreed. With differential privacy, each
node's `Agreement` also carries its shares of its own noise (see `compute.dp`), so the aggregate
is only ever reconstructed with the noise in it. Inputs the table does not allow raise a
`ProtocolError` and leave the node unchanged.

Ensemble rounds (an `EnsemblePlan` in the configuration) fit their weights inside the round:
after agreeing, each node sends its shares of every participant's validation statistic
(`compute.ensemble.stat_partial`, one value per model, a stage-0 `Statistic`) and
reconstructs them with its peers' (Shamir checks them like partials). From them every node
computes the same candidate blends (`EnsemblePlan.blends`); with two models or more it sends
its shares of the blends' validation probabilities (`compute.ensemble.blend_partial`, a
stage-1 `Statistic`), reconstructs them, chooses the candidate with the best validation
accuracy (`EnsemblePlan.select`, the same on every node) and only then sends its weighted
partial of the test probabilities. A node that gives up on a peer during the fit does not take
that peer's later values.

Scored rounds (a `ScorePlan` in the configuration: forecasts) score each participant alone:
after agreeing, each node sends its shares of every participant's score against the plan's
public weights (`compute.scoring.score_partial`, one value per participant, a stage-0
`Statistic`), reconstructs them with its peers' (Shamir checks them like partials) and is done:
the result's `aggregate.total` holds the integer scores, participants' order, and nothing else
(no sum over the participants is ever reconstructed).

Product rounds (a `ProductPlan`: a valuation's) take the ordinary path with another partial: each
node's agreement also carries its shares of fresh zero sharings (one per dataset it holds, one
more), and once the views are complete its partial is its masked local product with the buyer's
query for every participant, then `q . q` (`compute.products.product_partial`), with the masks'
senders as `noise_from` so that only partials over the same masks combine; they are opened at
degree 2t-2. The result's `aggregate.total` holds each participant's total and `q . q`. Like a
scored round, it closes only once resolved: here with this node's own share of the query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compute.ensemble import (
    Selection,
    blend_partial,
    decode_ensemble,
    stat_partial,
    weighted_partial,
)
from compute.errors import (
    DuplicateMessageError,
    DuplicateSubmissionError,
    LateSubmissionError,
    MalformedMessageError,
    ReductionError,
    ShareInconsistencyError,
    UnexpectedEventError,
    WrongJobError,
)
from compute.messages import (
    Agreement,
    CloseSubmissions,
    Event,
    NoiseSampler,
    Outcome,
    Outgoing,
    Partial,
    PeerUnavailable,
    Result,
    RoundConfig,
    Statistic,
    Submission,
)
from compute.products import ProductPlan, product_partial, product_scheme, zero_masks
from compute.randomness import Randomness
from compute.reduce import (
    Abort,
    AbortReason,
    Aggregate,
    PartialSum,
    agree,
    inconsistency_abort,
)
from compute.scoring import ScorePlan, score_partial
from compute.sharing import Scheme

_PARTIAL_CHUNK = 64
"""Shares summed per step when a heavy node computes its partial (bounds memory)."""


# --- light node ------------------------------------------------------------------------------


SEED_MIN_WORDS = 3
"""Contributions shorter than this travel as vectors: a sealed seed (a tag byte and 16 bytes)
is no smaller than two words."""


class LightNodeRound:
    """A provider's side of one round: its shares, one message per heavy node, made once."""

    def __init__(self, config: RoundConfig, dataset_id: str) -> None:
        self.config = config
        self.dataset_id = dataset_id
        self._messages: tuple[Submission, ...] | None = None

    @property
    def messages(self) -> tuple[Submission, ...] | None:
        """The submissions made by `submit`, to resend on retry; `None` before."""
        return self._messages

    def submit(self, values: ArrayLike, rng: Randomness) -> tuple[Submission, ...]:
        """Encode, clip and share this dataset's records; one `Submission` per heavy node."""
        if self._messages is not None:
            raise UnexpectedEventError(
                f"dataset {self.dataset_id} already shared its contribution to job "
                f"{self.config.job_id}; resend `messages` instead of sharing again"
            )
        contribution = self.config.reduction.contribution(values)
        scheme = self.config.scheme
        if contribution.size < SEED_MIN_WORDS:
            shares = scheme.share(contribution, rng)
            self._messages = tuple(
                Submission(self.config.job_id, self.dataset_id, node, shares[node - 1])
                for node in self.config.committee
            )
            return self._messages
        # Seed compression: the holders whose shares are pure randomness get a seed; which
        # ones rotates with the dataset (public), so every heavy node expands as many seeds.
        turn = int.from_bytes(hashlib.sha256(self.dataset_id.encode()).digest()[:8], "big")
        shared = scheme.share_seeded(contribution, rng, scheme.seed_holders(turn))
        messages = []
        for node in self.config.committee:
            seed = shared.seeds.get(node)
            share = shared.vectors[node] if seed is None else scheme.seed_share(seed, shared.shape)
            messages.append(Submission(self.config.job_id, self.dataset_id, node, share, seed))
        self._messages = tuple(messages)
        return self._messages


# --- heavy node ------------------------------------------------------------------------------


def _terms(plan: ScorePlan | ProductPlan) -> tuple[object, ...]:
    """What a pending plan and its resolution must share."""
    if isinstance(plan, ScorePlan):
        return ("scores", plan.length, plan.value_scale)
    return ("products", plan.k, plan.q_bits, plan.g_bits)


def _view(message: Statistic | Partial) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """What two nodes' values must agree on to be combined."""
    return message.participants, message.noise_from if isinstance(message, Partial) else ()


class Phase(StrEnum):
    COLLECTING = "collecting"
    AGREEING = "agreeing"
    FITTING = "fitting"
    SELECTING = "selecting"
    SCORING = "scoring"
    COMBINING = "combining"
    DONE = "done"
    ABORTED = "aborted"


class Trigger(StrEnum):
    """Transitions a node fires itself once it has heard from every peer."""

    VIEWS_COMPLETE = "views complete"
    FIT_WEIGHTS = "views complete, ensemble"
    STATISTICS_COMPLETE = "statistics complete"
    EVALUATE_BLENDS = "statistics complete, blends"
    BLENDS_COMPLETE = "blends complete"
    SCORE = "views complete, scoring"
    SCORES_COMPLETE = "scores complete"
    PARTIALS_COMPLETE = "partials complete"
    ABORT = "abort"


_C, _A, _F, _M = Phase.COLLECTING, Phase.AGREEING, Phase.FITTING, Phase.COMBINING
_S, _R = Phase.SELECTING, Phase.SCORING
_D, _X = Phase.DONE, Phase.ABORTED

TRANSITIONS: Final[Mapping[tuple[Phase, type[Event] | Trigger], Phase]] = MappingProxyType({
    (_C, Submission): _C,
    (_C, Agreement): _C,
    (_C, Statistic): _C,
    (_C, Partial): _C,
    (_C, PeerUnavailable): _C,
    (_C, CloseSubmissions): _A,
    (_A, Agreement): _A,
    (_A, Statistic): _A,
    (_A, Partial): _A,
    (_A, PeerUnavailable): _A,
    (_A, Trigger.VIEWS_COMPLETE): _M,
    (_A, Trigger.FIT_WEIGHTS): _F,
    (_A, Trigger.ABORT): _X,
    (_F, Agreement): _F,
    (_F, Statistic): _F,
    (_F, Partial): _F,
    (_F, PeerUnavailable): _F,
    (_F, Trigger.STATISTICS_COMPLETE): _M,
    (_F, Trigger.EVALUATE_BLENDS): _S,
    (_F, Trigger.ABORT): _X,
    (_S, Agreement): _S,
    (_S, Statistic): _S,
    (_S, Partial): _S,
    (_S, PeerUnavailable): _S,
    (_S, Trigger.BLENDS_COMPLETE): _M,
    (_S, Trigger.ABORT): _X,
    (_A, Trigger.SCORE): _R,
    (_R, Agreement): _R,
    (_R, Statistic): _R,
    (_R, Partial): _R,
    (_R, PeerUnavailable): _R,
    (_R, Trigger.SCORES_COMPLETE): _D,
    (_R, Trigger.ABORT): _X,
    (_M, Agreement): _M,
    (_M, Statistic): _M,
    (_M, Partial): _M,
    (_M, PeerUnavailable): _M,
    (_M, Trigger.PARTIALS_COMPLETE): _D,
    (_M, Trigger.ABORT): _X,
    (_D, Agreement): _D,
    (_D, Statistic): _D,
    (_D, Partial): _D,
    (_D, PeerUnavailable): _D,
    (_X, Agreement): _X,
    (_X, Statistic): _X,
    (_X, Partial): _X,
    (_X, PeerUnavailable): _X,
})  # fmt: skip
"""Every transition of a heavy node. An input missing here is refused in that phase."""


@dataclass
class _Peers:
    views: dict[int, frozenset[str]] = field(default_factory=dict)
    noise: dict[int, NDArray[np.uint64]] = field(default_factory=dict)
    masks: dict[int, NDArray[np.uint64]] = field(default_factory=dict)
    statistics: dict[int, Statistic] = field(default_factory=dict)
    blends: dict[int, Statistic] = field(default_factory=dict)
    partials: dict[int, Partial] = field(default_factory=dict)
    unavailable: set[int] = field(default_factory=set)


class HeavyNodeRound:
    """One heavy node's side of one round. Feed it events with `handle`; send what it returns;
    read `outcome` once `phase` is DONE or ABORTED."""

    def __init__(
        self,
        config: RoundConfig,
        index: int,
        rng: Randomness,
        noise: NoiseSampler | None = None,
    ) -> None:
        if index not in config.committee:
            raise MalformedMessageError(f"node index {index} is not in {config.committee}")
        if (config.privacy is None) != (noise is None):
            raise ReductionError("pass a noise sampler exactly when the round has a DP plan")
        self.config = config
        self.index = index
        self._rng = rng
        self._noise = noise
        self.phase = Phase.COLLECTING
        self.outcome: Outcome | None = None
        self._shares: dict[str, NDArray[np.uint64]] = {}
        self._peers = _Peers()
        self._own: Partial | None = None
        self._own_statistic: Statistic | None = None
        self._own_blend: Statistic | None = None
        self._totals: NDArray[np.int64] | None = None
        self._blends: tuple[NDArray[np.int64], ...] = ()
        self._selection: Selection | None = None
        self._live: tuple[int, ...] = ()

    @property
    def dataset_ids(self) -> frozenset[str]:
        """Datasets this node holds a share of."""
        return frozenset(self._shares)

    def handle(self, event: Event) -> list[Outgoing]:
        """Process one event; return the messages to send (each names its recipient).

        Raises a `ProtocolError` for an event the node cannot take, and then changes nothing.
        """
        self._check_addressing(event)
        following = self._next(type(event))
        outgoing: list[Outgoing] = []
        if isinstance(event, Submission):
            self._keep_submission(event)
        elif isinstance(event, CloseSubmissions):
            outgoing = self._close()
        elif self.phase in (Phase.DONE, Phase.ABORTED):
            return []  # late peer messages: the outcome is settled
        elif isinstance(event, PeerUnavailable):
            self._peers.unavailable.add(event.node)
        elif isinstance(event, Agreement):
            self._keep_agreement(event)
        elif isinstance(event, Statistic):
            self._keep_statistic(event)
        else:
            self._keep_partial(event)
        self.phase = following
        return outgoing + self._advance()

    # --- transitions ---

    def _next(self, trigger: type[Event] | Trigger) -> Phase:
        following = TRANSITIONS.get((self.phase, trigger))
        if following is None:
            if trigger is Submission:
                raise LateSubmissionError(
                    f"job {self.config.job_id}: submissions closed (node {self.index} is "
                    f"{self.phase}); the deadline has passed"
                )
            name = trigger if isinstance(trigger, Trigger) else trigger.__name__
            raise UnexpectedEventError(f"node {self.index} cannot take {name} while {self.phase}")
        return following

    def _move(self, trigger: Trigger) -> None:
        self.phase = self._next(trigger)

    def _abort(self, reason: AbortReason, detail: str) -> list[Outgoing]:
        return self._finish(Abort(reason, detail))

    def _finish(self, outcome: Outcome) -> list[Outgoing]:
        done = Trigger.SCORES_COMPLETE if self.phase is Phase.SCORING else Trigger.PARTIALS_COMPLETE
        self._move(Trigger.ABORT if isinstance(outcome, Abort) else done)
        self.outcome = outcome
        return []

    def _advance(self) -> list[Outgoing]:
        if self.phase is Phase.AGREEING and self._heard_from_all(self._peers.views, self._peers_()):
            return self._agree()
        if self.phase is Phase.FITTING and self._heard_from_all(
            self._peers.statistics, self._live_peers()
        ):
            return self._fit_weights()
        if self.phase is Phase.SELECTING and self._heard_from_all(
            self._peers.blends, self._live_peers()
        ):
            return self._select()
        if self.phase is Phase.SCORING and self._heard_from_all(
            self._peers.statistics, self._live_peers()
        ):
            return self._score()
        if self.phase is Phase.COMBINING and self._heard_from_all(
            self._peers.partials, self._live_peers()
        ):
            return self._combine()
        return []

    def _heard_from_all(self, received: Mapping[int, object], peers: tuple[int, ...]) -> bool:
        return all(p in received or p in self._peers.unavailable for p in peers)

    # --- what happens in each phase ---

    def resolve(self, config: RoundConfig) -> None:
        """Scored and product rounds: take the configuration with the score weights (a
        forecast's outcomes, which every member must hold alike, by hash: the driver checks) or
        this member's share of the buyer's query in place of the pending one, before
        `CloseSubmissions`. Refused for anything but the same round, resolved."""
        mine, theirs = (
            self.config.scoring or self.config.products,
            config.scoring or config.products,
        )
        if mine is None or not mine.pending or self.phase is not Phase.COLLECTING:
            raise UnexpectedEventError(f"node {self.index} has no pending input to resolve")
        same = (
            config.job_id == self.config.job_id
            and config.reduction == self.config.reduction
            and config.min_participants == self.config.min_participants
            and (config.scheme.name, config.scheme.n, config.scheme.threshold)
            == (self.config.scheme.name, self.config.scheme.n, self.config.scheme.threshold)
        )
        if not same or theirs is None or theirs.pending or _terms(theirs) != _terms(mine):
            raise MalformedMessageError(f"job {self.config.job_id}: not its resolved round")
        self.config = config

    def _close(self) -> list[Outgoing]:
        pending = self.config.scoring or self.config.products
        if pending is not None and pending.pending:
            raise UnexpectedEventError(
                f"job {self.config.job_id}: the round's late input is pending (a forecast's "
                "outcomes, a valuation's query); resolve the round before closing it"
            )
        ids = self.dataset_ids
        noise_shares = masks = None
        if self._noise is not None:
            noise_shares = self.config.scheme.share(self._noise(), self._rng)
            self._peers.noise[self.index] = noise_shares[self.index - 1]
        if self.config.products is not None:  # one per dataset held (sorted), one for q . q
            scheme = self.config.scheme
            masks = zero_masks(scheme.n, scheme.threshold, len(ids) + 1, self._rng)
            self._peers.masks[self.index] = masks[self.index - 1]
        self._peers.views[self.index] = ids
        return [
            Agreement(
                self.config.job_id, self.index, peer, ids,
                None if noise_shares is None else noise_shares[peer - 1],
                None if masks is None else masks[peer - 1],
            )
            for peer in self._peers_()
            if peer not in self._peers.unavailable
        ]  # fmt: skip

    def _agree(self) -> list[Outgoing]:
        live = tuple(sorted(n for n in self._peers.views if n not in self._peers.unavailable))
        scheme = self.config.scheme
        if len(live) < scheme.threshold:
            return self._abort(
                AbortReason.TOO_FEW_HEAVY_NODES,
                f"heavy nodes {list(live)} are available; {scheme.name} sharing needs "
                f"{scheme.threshold} of {scheme.n}",
            )
        participants = agree({n: self._peers.views[n] for n in live})
        if len(participants) < self.config.min_participants:
            return self._abort(
                AbortReason.TOO_FEW_PARTICIPANTS,
                f"{len(participants)} datasets reached every available heavy node; the "
                f"proposal needs at least {self.config.min_participants}",
            )
        self._live = live
        if self.config.ensemble is not None:
            return self._send_statistics(participants)
        if self.config.scoring is not None:
            return self._send_scores(participants)
        self._move(Trigger.VIEWS_COMPLETE)
        noise_from: tuple[int, ...] = ()
        if self.config.products is not None:
            value, noise_from = self._products(participants, live), live
        else:
            value = self._partial_over(participants)
        if self.config.privacy is not None:
            noise_from = live
            for node in live:
                value = scheme.add(value, self._peers.noise[node])
        self._own = Partial(
            self.config.job_id, self.index, self.index, participants, noise_from, value
        )
        return [
            Partial(self.config.job_id, self.index, peer, participants, noise_from, value)
            for peer in live
            if peer != self.index
        ] + self._advance()

    def _send_statistics(self, participants: tuple[str, ...]) -> list[Outgoing]:
        """Ensemble rounds: this node's shares of each model's validation statistic."""
        plan, scheme = self.config.ensemble, self.config.scheme
        assert plan is not None
        return self._send_per_participant(
            Trigger.FIT_WEIGHTS, participants,
            lambda rows: stat_partial(scheme, rows, plan.columns),
        )  # fmt: skip

    def _send_scores(self, participants: tuple[str, ...]) -> list[Outgoing]:
        """Scored rounds: this node's shares of each participant's score, to every peer."""
        plan, scheme = self.config.scoring, self.config.scheme
        assert plan is not None
        return self._send_per_participant(
            Trigger.SCORE, participants, lambda rows: score_partial(scheme, rows, plan.known)
        )

    def _send_per_participant(
        self, trigger: Trigger, participants: tuple[str, ...], partial: Callable[..., np.ndarray]
    ) -> list[Outgoing]:
        """One stage-0 `Statistic` of `partial(rows)` per participant, kept and sent to peers."""
        self._move(trigger)
        value = np.concatenate([partial(rows) for rows in self._rows(participants)])
        job = self.config.job_id
        self._own_statistic = Statistic(job, self.index, self.index, participants, value)
        return [
            Statistic(job, self.index, peer, participants, value)
            for peer in self._live
            if peer != self.index
        ] + self._advance()

    def _score(self) -> list[Outgoing]:
        """Scored rounds: reconstruct each participant's score; the round's result."""
        own, plan = self._own_statistic, self.config.scoring
        assert own is not None and plan is not None  # set by _send_scores
        reconstructed = self._reconstruct(own, self._peers.statistics, "scores")
        if reconstructed is None:
            return []
        totals, holders = reconstructed
        aggregate = Aggregate(
            self.config.reduction, own.participants, holders, totals, plan.scores(totals)
        )
        return self._finish(Result(self.config.job_id, aggregate, None))

    def _fit_weights(self) -> list[Outgoing]:
        """Ensemble rounds: reconstruct the validation statistics; with candidate blends, send
        this node's shares of their validation probabilities, else choose the best model."""
        own = self._own_statistic
        plan, scheme = self.config.ensemble, self.config.scheme
        assert own is not None and plan is not None  # set by _send_statistics
        reconstructed = self._reconstruct(own, self._peers.statistics, "statistics")
        if reconstructed is None:
            return []
        self._totals, _ = reconstructed
        self._blends = plan.blends(self._totals)
        if not self._blends:
            self._move(Trigger.STATISTICS_COMPLETE)
            return self._send_partial(plan.select(self._totals))
        self._move(Trigger.EVALUATE_BLENDS)
        value = np.zeros(plan.blend_length(len(own.participants)), dtype=np.uint64)
        start = 0
        for rows in self._rows(own.participants):
            chunk = [w[start : start + len(rows)] for w in self._blends]
            value = scheme.add(value, blend_partial(scheme, rows, plan.layout, chunk))
            start += len(rows)
        job = self.config.job_id
        self._own_blend = Statistic(job, self.index, self.index, own.participants, value, 1)
        return [
            Statistic(job, self.index, peer, own.participants, value, 1)
            for peer in self._live_peers()
        ] + self._advance()

    def _select(self) -> list[Outgoing]:
        """Ensemble rounds: reconstruct the blends' validation probabilities, choose the
        candidate with the best validation accuracy, and send this node's partial."""
        own, plan = self._own_blend, self.config.ensemble
        assert own is not None and plan is not None and self._totals is not None
        reconstructed = self._reconstruct(own, self._peers.blends, "blends")
        if reconstructed is None:
            return []
        self._move(Trigger.BLENDS_COMPLETE)
        return self._send_partial(plan.select(self._totals, self._blends, reconstructed[0]))

    def _send_partial(self, selection: Selection) -> list[Outgoing]:
        """Ensemble rounds, the weights chosen: this node's weighted partial of the test
        probabilities, to every live peer."""
        own, plan, scheme = self._own_statistic, self.config.ensemble, self.config.scheme
        assert own is not None and plan is not None
        self._selection = selection
        weights = selection.weights
        value = np.zeros(plan.layout.n_test * plan.layout.classes, dtype=np.uint64)
        start = 0
        for rows in self._rows(own.participants):
            chunk = weights[start : start + len(rows)]
            value = scheme.add(value, weighted_partial(scheme, rows, plan.layout, chunk))
            start += len(rows)
        job = self.config.job_id
        self._own = Partial(job, self.index, self.index, own.participants, (), value)
        return [
            Partial(job, self.index, peer, own.participants, (), value)
            for peer in self._live_peers()
        ] + self._advance()

    def _products(self, participants: tuple[str, ...], live: tuple[int, ...]) -> NDArray[np.uint64]:
        """Product rounds: this node's share of each participant's `q . G_p` and of `q . q`,
        masked by every live node's zero sharings (`compute.products`), each node's masks
        picked by the participants' places in its view."""
        plan = self.config.products
        assert plan is not None
        masks = []
        for node in live:
            order = {d: i for i, d in enumerate(sorted(self._peers.views[node]))}
            places = [order[d] for d in participants] + [len(order)]
            masks.append(self._peers.masks[node][places])
        rows = np.concatenate(list(self._rows(participants)))
        return product_partial(plan.known, rows, masks)

    def _rows(self, participants: tuple[str, ...]) -> Iterator[NDArray[np.uint64]]:
        """This node's shares of the participants, stacked in chunks of rows (one chunk in
        memory at a time)."""
        for start in range(0, len(participants), _PARTIAL_CHUNK):
            yield np.stack([self._shares[d] for d in participants[start : start + _PARTIAL_CHUNK]])

    def _partial_over(self, participants: tuple[str, ...]) -> NDArray[np.uint64]:
        """The sum of this node's shares of the participants, in chunks of rows."""
        running = PartialSum(self.config.scheme, self.config.reduction.length)
        for rows in self._rows(participants):
            running.add(rows)
        return running.value

    def _combine(self) -> list[Outgoing]:
        own = self._own
        assert own is not None  # set by _agree before COMBINING
        products = self.config.products
        scheme = None
        if products is not None:
            scheme = product_scheme(self.config.scheme.n, self.config.scheme.threshold)
        reconstructed = self._reconstruct(own, self._peers.partials, "partials", scheme)
        if reconstructed is None:
            return []
        total, holders = reconstructed
        reduction = self.config.reduction
        if products is not None:  # each total, then q . q; `compute.products.check_totals`
            values = products.decode(total)
            aggregate = Aggregate(reduction, own.participants, holders, total, values)
            return self._finish(Result(self.config.job_id, aggregate, None))
        if self._selection is not None:
            plan = self.config.ensemble
            assert plan is not None
            values = decode_ensemble(total, plan.layout).ravel()
            aggregate = Aggregate(reduction, own.participants, holders, total, values)
            fit = self._selection.fit(total)
            return self._finish(Result(self.config.job_id, aggregate, None, fit))
        aggregate = Aggregate(reduction, own.participants, holders, total, reduction.finish(total))
        privacy = self.config.privacy
        spent = None if privacy is None else privacy.spent(len(own.noise_from))
        return self._finish(Result(self.config.job_id, aggregate, spent))

    def _reconstruct(
        self,
        own: Statistic | Partial,
        received: Mapping[int, Statistic | Partial],
        what: str,
        scheme: Scheme | None = None,
    ) -> tuple[NDArray[np.int64], tuple[int, ...]] | None:
        """Reconstruct from this node's value and the live peers' that agree with it (the same
        participants, and for partials the same noise); the holders used. None when the round
        aborted instead: too few usable values, or (Shamir) values that disagree."""
        usable = {self.index: own.value}
        divergent = []
        for peer, message in received.items():
            if peer not in self._live_peers():
                continue  # sent before we gave up on it, or never agreed with us
            if _view(message) == _view(own):
                usable[peer] = message.value
            else:
                divergent.append(peer)
        scheme = scheme or self.config.scheme
        if len(usable) < scheme.threshold:
            reason = AbortReason.DIVERGENT_VIEWS if divergent else AbortReason.TOO_FEW_HEAVY_NODES
            self._abort(
                reason,
                f"{len(usable)} usable {what} (from {sorted(usable)}); {scheme.name} needs "
                f"{scheme.threshold}; nodes {divergent} agreed on a different participant set",
            )
            return None
        try:
            return scheme.reconstruct(usable), tuple(sorted(usable))
        except ShareInconsistencyError as error:
            self._finish(inconsistency_abort(error, own=self.index))
            return None

    # --- keeping what arrives ---

    def _peers_(self) -> tuple[int, ...]:
        return tuple(n for n in self.config.committee if n != self.index)

    def _live_peers(self) -> tuple[int, ...]:
        """Peers that took part in the agreement and have not been given up on since."""
        return tuple(n for n in self._live if n != self.index and n not in self._peers.unavailable)

    def _check_addressing(self, event: Event) -> None:
        if event.job_id != self.config.job_id:
            raise WrongJobError(f"message for job {event.job_id}, this is {self.config.job_id}")
        addressed = Submission | Agreement | Statistic | Partial
        if isinstance(event, addressed) and event.recipient != self.index:
            raise WrongJobError(f"message for node {event.recipient} delivered to {self.index}")
        if (
            isinstance(event, Agreement | Statistic | Partial)
            and event.sender not in self._peers_()
        ):
            raise MalformedMessageError(f"sender {event.sender} is not a peer of {self.index}")
        if isinstance(event, PeerUnavailable) and event.node not in self._peers_():
            raise MalformedMessageError(f"node {event.node} is not a peer of {self.index}")

    def _check_vector(self, value: object, what: str, length: int | None = None) -> None:
        length = self.config.reduction.length if length is None else length
        if not (
            isinstance(value, np.ndarray) and value.dtype == np.uint64 and value.shape == (length,)
        ):
            raise MalformedMessageError(f"{what} must be a uint64 vector of length {length}")

    def _keep_submission(self, event: Submission) -> None:
        if event.dataset_id in self._shares:
            raise DuplicateSubmissionError(
                f"dataset {event.dataset_id} already submitted to job {self.config.job_id}"
            )
        self._check_vector(event.share, f"share from {event.dataset_id}")
        self._shares[event.dataset_id] = event.share

    def _keep_agreement(self, event: Agreement) -> None:
        if event.sender in self._peers.unavailable:
            return
        if event.sender in self._peers.views:
            raise DuplicateMessageError(f"second agreement from node {event.sender}")
        if (event.noise_share is None) != (self.config.privacy is None):
            raise MalformedMessageError(
                f"agreement from node {event.sender} must carry a noise share exactly when "
                "the round adds DP noise"
            )
        if event.noise_share is not None:
            self._check_vector(event.noise_share, f"noise share from node {event.sender}")
            self._peers.noise[event.sender] = event.noise_share
        if (event.mask_share is None) != (self.config.products is None):
            raise MalformedMessageError(
                f"agreement from node {event.sender} must carry mask shares exactly when "
                "the round opens products"
            )
        if event.mask_share is not None:
            length = len(event.dataset_ids) + 1
            self._check_vector(event.mask_share, f"masks from node {event.sender}", length)
            self._peers.masks[event.sender] = event.mask_share
        self._peers.views[event.sender] = frozenset(event.dataset_ids)

    def _keep_statistic(self, event: Statistic) -> None:
        if self.config.ensemble is None and self.config.scoring is None:
            raise UnexpectedEventError(f"job {self.config.job_id} fits no ensemble weights")
        if event.stage not in ((0,) if self.config.ensemble is None else (0, 1)):
            raise MalformedMessageError(
                f"statistic from node {event.sender} of stage {event.stage}"
            )
        if event.sender in self._peers.unavailable:
            return
        kept = self._peers.blends if event.stage else self._peers.statistics
        what = "blends" if event.stage else "statistic"
        if event.sender in kept:
            raise DuplicateMessageError(f"second {what} from node {event.sender}")
        models = len(event.participants)
        length = self.config.ensemble.blend_length(models) if event.stage else models
        self._check_vector(event.value, f"{what} from node {event.sender}", length)
        kept[event.sender] = event

    def _keep_partial(self, event: Partial) -> None:
        if event.sender in self._peers.unavailable:
            return
        if event.sender in self._peers.partials:
            raise DuplicateMessageError(f"second partial from node {event.sender}")
        plan = self.config.ensemble
        length = None if plan is None else plan.layout.n_test * plan.layout.classes
        if self.config.products is not None:
            length = len(event.participants) + 1
        self._check_vector(event.value, f"partial from node {event.sender}", length)
        self._peers.partials[event.sender] = event
