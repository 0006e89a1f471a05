"""Run a whole aggregation round in one process: the same state machines, an in-memory network.

This is the driver the tests and the demo use for up to thousands of light nodes; the HTTP
services drive the very same `LightNodeRound` and `HeavyNodeRound`. Faults are injected at the
network: heavy nodes that are offline, submissions that never reach some heavy nodes, and a
heavy node that tampers with its partial before sending it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compute.ensemble import EnsemblePlan, EnsembleResult
from compute.errors import ReductionError
from compute.messages import (
    CloseSubmissions,
    NoiseSampler,
    Outcome,
    Outgoing,
    Partial,
    PeerUnavailable,
    Result,
    RoundConfig,
    Statistic,
)
from compute.products import ProductPlan, encode_query, gradient_reduction, share_query
from compute.randomness import Randomness
from compute.round import HeavyNodeRound, LightNodeRound
from compute.sharing import Scheme, ShamirScheme


@dataclass(frozen=True)
class Faults:
    """What goes wrong in a simulated round."""

    offline: frozenset[int] = frozenset()
    """Heavy nodes that never answer; the others are told `PeerUnavailable` for them."""
    lost: Mapping[str, frozenset[int]] = field(default_factory=dict)
    """Per dataset, the heavy nodes its submission never reaches."""
    tamper: Mapping[int, Callable[[NDArray[np.uint64]], NDArray[np.uint64]]] = field(
        default_factory=dict
    )
    """Per heavy node, how it alters its partials (and an ensemble round's statistics) before
    sending them (a cheater)."""


def simulate_round(
    config: RoundConfig,
    datasets: Mapping[str, ArrayLike],
    rng: Randomness,
    *,
    faults: Faults = Faults(),
    noise: NoiseSampler | Mapping[int, NoiseSampler] | None = None,
    members: Mapping[int, RoundConfig] | None = None,
) -> dict[int, Outcome]:
    """Share every dataset, run the committee to completion, return each online heavy node's
    outcome. `rng` serves light and heavy nodes alike; `noise` is the heavy nodes' sampler (one
    for all, or one per node) when the round has DP; `members`, per heavy node, a
    configuration of its own (a product round's, holding its share of the query)."""
    online = [n for n in config.committee if n not in faults.offline]
    samplers = noise if isinstance(noise, Mapping) else dict.fromkeys(online, noise)
    own = members or {}
    nodes = {n: HeavyNodeRound(own.get(n, config), n, rng, samplers[n]) for n in online}
    for dataset_id, values in datasets.items():
        lost = faults.lost.get(dataset_id, frozenset())
        for submission in LightNodeRound(config, dataset_id).submit(values, rng):
            if submission.recipient in nodes and submission.recipient not in lost:
                nodes[submission.recipient].handle(submission)
    queue: deque[Outgoing] = deque()
    for node in nodes.values():
        for peer in sorted(faults.offline):
            queue.extend(node.handle(PeerUnavailable(config.job_id, peer)))
    for node in nodes.values():
        queue.extend(node.handle(CloseSubmissions(config.job_id)))
        while queue:
            message = _tampered(queue.popleft(), faults)
            if message.recipient in nodes:
                queue.extend(nodes[message.recipient].handle(message))
    return {n: node.outcome for n, node in nodes.items() if node.outcome is not None}


def _tampered(message: Outgoing, faults: Faults) -> Outgoing:
    change = faults.tamper.get(message.sender)
    if change is None or not isinstance(message, Partial | Statistic):
        return message
    return replace(message, value=change(message.value))


def simulate_ensemble(
    scheme: Scheme,
    records: Mapping[str, ArrayLike],
    plan: EnsemblePlan,
    rng: Randomness,
    *,
    faults: Faults = Faults(),
) -> EnsembleResult:
    """An ensemble round for a whole committee in one process: every model holder's records
    (its probabilities, one row: `compute.ensemble.records`), the committee's fit and
    ensemble, decoded as heavy node 1 (or the first online node) sees it."""
    config = RoundConfig(
        "ensemble", plan.layout.reduction(max(len(records), 1)), scheme, 1, ensemble=plan
    )
    outcomes = simulate_round(config, records, rng, faults=faults)
    outcome = outcomes[min(outcomes)] if outcomes else None
    if not isinstance(outcome, Result) or outcome.fit is None:
        raise ReductionError(f"the ensemble round did not finish: {outcome}")
    return plan.result(outcome.participants, outcome.fit)


def simulate_valuation(
    query: ArrayLike,
    gradients: Mapping[str, ArrayLike],
    scheme: ShamirScheme,
    rng: Randomness,
    *,
    q_bits: int,
    g_bits: int,
    faults: Faults = Faults(),
) -> tuple[dict[int, Outcome], ProductPlan]:
    """A valuation job's committee round in one process: the buyer shares its encoded query,
    each provider its summed gradient (one record), and every online member opens each
    provider's `q . G_p` (`compute.products`). Returns the outcomes and the pending plan."""
    encoded = encode_query(query, q_bits)
    k = len(encoded)
    shared = share_query(encoded, scheme.n, scheme.threshold, rng)
    plan = ProductPlan(k, q_bits, g_bits)
    config = RoundConfig("valuation", gradient_reduction(k, g_bits), scheme, 1, products=plan)
    members = {
        i: replace(config, products=replace(plan, query_share=shared.shares[i - 1]))
        for i in config.committee
    }
    records = {d: np.reshape(g, (1, k)) for d, g in gradients.items()}
    return simulate_round(config, records, rng, faults=faults, members=members), plan
