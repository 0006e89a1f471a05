"""`market demo --kind forecast`: a forecast tournament end to end on the embedded chain.

Three model holders stake datasets and sign their participation (a 20% slash cap); the buyer
posts a `forecast` job over T published targets. Before the deadline each holder's predictions
(skilled, random, adversarial) are standardized by the vetted map and Shamir-shared to the
three-member committee, which collects them with its scores' weights pending. Outcomes posted
before the resolution time are refused; after it the buyer's outcomes resolve every member's
round (the same outcomes, by hash), the committee scores each holder alone under sharing (the
in-process round of `compute.round`, the same state machines the nodes run), settles by the
kind's rule (`JobKind.settle`) and finalizes on chain with the committee's signatures and the
slashed holders' consents; the holders claim and the accounting check runs.

The heavy nodes' HTTP service does not run here: the round is driven in process
(`compute.round` over an in-memory network), the contract calls are the real ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compute.economics import payout_pool
from compute.kinds import kind_named
from compute.messages import CloseSubmissions, Result
from compute.proposal import Proposal, parse_proposal
from compute.round import HeavyNodeRound, LightNodeRound
from compute.scoring import standardize
from market.chain import TOKEN, Chain
from market.chain.units import format_utc
from market.escrow import Slash
from market.sandbox import Sandbox

BUDGET = 1_000 * TOKEN
FEE_BPS = 500
STAKE = 100 * TOKEN
CAP_BPS = 2_000


class OutcomesRefused(ValueError):
    """Outcomes posted too early or by someone other than the buyer."""


@dataclass
class HolderLine:
    name: str
    score: float
    correlation: float
    """numpy's Pearson correlation of its raw predictions with the outcomes (for the table)."""
    payout: int
    slash: int


@dataclass
class ForecastDemoReport:
    job_id: int
    targets: int
    holders: list[HolderLine]
    refused_early: str
    refund: int
    burned: int


def check_outcomes(proposal: Proposal, now: int, poster: str, buyer: str) -> None:
    """Refuse outcomes before the resolution time (never before the deadline) or from anyone
    but the buyer, with a message that says when and who."""
    kind = proposal.job_kind
    after = kind.late_after(proposal)
    if after is None:
        raise OutcomesRefused(f"kind {kind.name!r} takes no outcomes")
    if poster.lower() != buyer.lower():
        raise OutcomesRefused(f"only the buyer {buyer} posts the outcomes, not {poster}")
    if now < max(after, proposal.deadline):
        raise OutcomesRefused(
            f"the outcomes are taken from {format_utc(max(after, proposal.deadline))} (the "
            f"resolution time); it is {format_utc(now)}: post them again then"
        )


def run_forecast_demo(
    chain: Chain,
    seed: int = 0,
    targets: int = 200,
    progress: Callable[[str], None] = lambda _: None,
) -> ForecastDemoReport:
    progress("the buyer posts the tournament; the holders share their predictions")
    rng = np.random.default_rng(seed)
    market = Sandbox.deploy(chain)
    committee = market.heavy_nodes(3)
    buyer = market.account(BUDGET)
    staked = market.datasets(3, STAKE)
    names = ("skilled", "random", "adversarial")
    job_id = market.post(
        buyer, committee, budget=BUDGET, fee_bps=FEE_BPS, max_slash_bps=CAP_BPS, window=3_600
    )
    view = market.escrow.job(job_id)
    proposal = parse_proposal(_proposal(view.deadline, view.deadline + 60, targets))

    # Before the deadline: the holders' predictions, standardized and shared.
    outcomes = rng.normal(size=targets)
    raw = {
        "skilled": outcomes + rng.normal(scale=0.7, size=targets),
        "random": rng.normal(size=targets),
        "adversarial": -outcomes + rng.normal(scale=0.7, size=targets),
    }
    pending = proposal.round_config(str(job_id))
    nodes = {i: HeavyNodeRound(pending, i, np.random.default_rng(seed + i)) for i in (1, 2, 3)}
    ids = {}
    for name, (owner, dataset_id) in zip(names, staked, strict=True):
        dataset = "0x" + dataset_id.hex()
        ids[dataset] = (name, owner, dataset_id)
        light = LightNodeRound(pending, dataset)
        for submission in light.submit(standardize(raw[name]), rng):
            nodes[submission.recipient].handle(submission)

    # The buyer's outcomes: refused before the resolution time, taken after it.
    progress("the buyer posts the outcomes; the committee scores each holder under sharing")
    posted = {"job_id": job_id, "values": [float(v) for v in outcomes]}
    try:
        check_outcomes(proposal, chain.now(), buyer.address, buyer.address)
        refused = ""
    except OutcomesRefused as error:
        refused = str(error)
    chain.increase_time(3_600 + 61)
    check_outcomes(proposal, chain.now(), buyer.address, buyer.address)
    digest = hashlib.sha256(json.dumps(posted, sort_keys=True).encode()).hexdigest()
    held = {i: digest for i in nodes}  # every member holds the same outcomes, by hash
    assert len(set(held.values())) == 1
    resolved = proposal.round_config(str(job_id), outcomes=posted["values"])
    queue = []
    for node in nodes.values():
        node.resolve(resolved)
    for node in nodes.values():
        queue.extend(node.handle(CloseSubmissions(str(job_id))))
    while queue:
        message = queue.pop(0)
        queue.extend(nodes[message.recipient].handle(message))
    outcome = nodes[1].outcome
    assert isinstance(outcome, Result), outcome

    # Settlement by the kind's rule, finalized on chain with the consents it needs.
    kind = kind_named(proposal.kind)
    stakes = {d: STAKE for d in ids}
    caps = dict.fromkeys(ids, CAP_BPS)
    settled = kind.settle(proposal, resolved, outcome, payout_pool(BUDGET, FEE_BPS), stakes, caps)
    payouts = {ids[d][1].address: a for d, a in settled.payouts.items()}
    slashes = [Slash(ids[d][2], a) for d, a in sorted(settled.slashes.items())]
    result, tree = market.result(job_id, payouts, participants=3, slashes=slashes)
    consents = [
        market.consent(ids["0x" + s.dataset_id.hex()][1], job_id, s.dataset_id, CAP_BPS)
        for s in result.slashes
    ]
    burned_before = market.escrow.totals().burned
    market.escrow.finalize(buyer, result, market.sign(committee, result), consents)
    if tree is not None:
        market.claim_all(job_id, tree)
    market.assert_accounting()
    scores = dict(zip(outcome.participants, outcome.values, strict=True))
    lines = [
        HolderLine(
            name,
            float(scores[d]),
            float(np.corrcoef(raw[name], outcomes)[0, 1]),
            settled.payouts.get(d, 0),
            settled.slashes.get(d, 0),
        )
        for d, (name, _, _) in ids.items()
    ]
    paid = sum(settled.payouts.values())
    return ForecastDemoReport(
        job_id=job_id,
        targets=targets,
        holders=sorted(lines, key=lambda h: -h.score),
        refused_early=refused,
        refund=payout_pool(BUDGET, FEE_BPS) - paid,
        burned=market.escrow.totals().burned - burned_before,
    )


def format_report(report: ForecastDemoReport) -> list[str]:
    lines = [f"forecast tournament, job {report.job_id}, {report.targets} targets"]
    lines.append(f"outcomes posted before the resolution time: refused ({report.refused_early})")
    lines.append(f"{'holder':<12} {'score':>8} {'numpy r':>8} {'payout':>12} {'slash':>12}")
    for h in report.holders:
        lines.append(
            f"{h.name:<12} {h.score:>+8.4f} {h.correlation:>+8.4f} "
            f"{h.payout / TOKEN:>12.4f} {h.slash / TOKEN:>12.4f}"
        )
    lines.append(f"pool not paid out, refunded to the buyer: {report.refund / TOKEN:.4f} DATA")
    lines.append(f"slashed stake burned: {report.burned / TOKEN:.4f} DATA")
    return lines


def _proposal(deadline: int, resolution: int, targets: int) -> dict:
    return {
        "version": 1,
        "kind": "forecast",
        "title": "Next month's returns, scored by correlation",
        "map": {},
        "reduce": {"scheme": "shamir", "threshold": 2, "threat_model": "malicious-detect"},
        "privacy": {"min_participants": 3},
        "economics": {"budget": BUDGET, "fee_bps": FEE_BPS, "max_slash_bps": CAP_BPS},
        "deadline": deadline,
        "committee_size": 3,
        "quorum": 2,
        "forecast": {
            "targets": targets,
            "resolution_time": resolution,
            "payout_factor": 1.0,
            "cap_bps": CAP_BPS,
        },
    }  # fmt: skip
