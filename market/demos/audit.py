"""`market demo --audit`: a platform audit (the PMSR LinkedIn and Dailymotion audits) through
the real node code.

An auditor wants to know how concentrated a recommender's exposure is, across several
platforms' impression logs that none of them will hand over: how many impressions each item
got, the Gini coefficient of those counts, the share the top 10% of items took, and each
item's share of the exposure against its published share of the catalogue. On the embedded
chain, the demo deploys the market, starts three heavy nodes (the FastAPI service on loopback,
a SQLite file each), stakes four providers' impression logs (synthetic, with heavy-tailed
Zipf item popularity, an item and a category column) and posts an aggregate bounty:
`category_counts` over the item column, a DP histogram (pure epsilon-DP, discrete Laplace),
with `gini`, `top_share` 10 and `baseline_ratio` against the catalogue as its post-processing.
Each provider's light node checks the bounty against its policy, counts its own log and
shares the counts; the committee reconstructs only the noisy counts of the union and
finalizes. The figures are computed from the released counts (post-processing of the DP
release) and beside them from the plaintext union of the logs, with the bound the job's
stated noise scale puts on their difference.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests

from compute.maps import run_map
from compute.policy import Policy, evaluate
from compute.postprocess import (
    figure_error_bound,
    noise_l1_bound,
    run_postprocess,
)
from compute.proposal import Proposal, parse_proposal
from market.chain import TOKEN, Chain
from market.demos.statistics import (
    DemoClock,
    Phase,
    _phase,
    refund_of,
    result_document,
    running_committee,
    settle,
)
from market.escrow import JobState
from market.sandbox import Sandbox
from nodes.jobs import proposal_for
from nodes.light import Directory, LightNode

BUDGET = 400 * TOKEN
FEE_BPS = 1_000
ITEMS = 40
CATEGORIES = ("news", "sport", "music", "film", "gaming", "kids")
ZIPF = 1.1
"""Item popularity falls as rank^-ZIPF (heavy-tailed), the same ranking on every platform."""
EPSILON = 1.0
FAILURE = 1e-9
"""The probability that the noise exceeds the stated error bound."""


@dataclass
class AuditReport:
    providers: int
    impressions: dict[str, int]
    """Rows of each provider's log, by dataset id."""
    job_id: int
    state: JobState
    items: list[str]
    epsilon: float
    mechanism: str
    noise_scale: float
    """OpenDP's scale of one heavy node's noise on each count (Laplace b)."""
    noise_shares: int
    """How many heavy nodes' noise is in the release."""
    error_bound: float
    """How far the noise may move the Gini and the top-10% share (exceeded with probability
    below `FAILURE`)."""
    secure_counts: list[float]
    plain_counts: list[int]
    secure: dict[str, Any]
    """The figures of the released (noisy) counts: gini, top_share, ratios."""
    plain: dict[str, Any]
    """The same figures of the plaintext union of the logs."""
    baseline: dict[str, float]
    fee_per_node: dict[str, int]
    refund: int
    phases: list[Phase] = field(default_factory=list)


def item_names() -> list[str]:
    return [f"item-{i:02d}" for i in range(ITEMS)]


def impression_logs(rng: np.random.Generator, providers: int) -> list[pd.DataFrame]:
    """Each platform's impression log: one row per impression (its item, the item's category
    and a user), items drawn by Zipf popularity with the platform's own tilt."""
    names = np.array(item_names())
    category = np.array([CATEGORIES[i % len(CATEGORIES)] for i in range(ITEMS)])
    popularity = 1.0 / np.arange(1, ITEMS + 1) ** ZIPF
    logs = []
    for _ in range(providers):
        tilt = popularity * rng.lognormal(0.0, 0.3, ITEMS)
        size = int(rng.integers(3_000, 8_000))
        items = rng.choice(ITEMS, size=size, p=tilt / tilt.sum())
        logs.append(
            pd.DataFrame(
                {
                    "item": names[items],
                    "category": category[items],
                    "user": rng.integers(0, 10**6, size),
                }
            )
        )
    return logs


def catalogue_baseline(rng: np.random.Generator) -> dict[str, float]:
    """The published baseline: each item's share of the catalogue's uploads."""
    uploads = rng.integers(5, 50, ITEMS)
    return {n: float(u / uploads.sum()) for n, u in zip(item_names(), uploads, strict=True)}


def audit_proposal(
    committee_size: int, deadline: int, baseline: dict[str, float], min_participants: int
) -> dict[str, Any]:
    return {
        "version": 1,
        "kind": "aggregate",
        "title": "Exposure concentration across platforms' impression logs",
        "map": {
            "function": "category_counts",
            "params": {"column": "item", "categories": ",".join(item_names())},
            "output": {"fields": []},
        },
        "reduce": {
            "op": "histogram",
            "scheme": "shamir",
            "threshold": 2,
            "threat_model": "malicious-detect",
            "bins": ITEMS,
        },  # fmt: skip
        "privacy": {"min_participants": min_participants, "dp": {"epsilon": EPSILON}},
        "economics": {"budget": BUDGET, "fee_bps": FEE_BPS, "payout_rule": "equal"},
        "deadline": deadline,
        "committee_size": committee_size,
        "quorum": 2,
        "postprocess": [
            {"function": "gini"},
            {"function": "top_share", "params": {"percent": 10}},
            {"function": "baseline_ratio", "params": {"baseline": baseline}},
        ],
    }


def figures(proposal: Proposal, counts: Any) -> dict[str, Any]:
    """The proposal's post-processed figures of `counts`, by function name."""
    return {f.pop("function"): f for f in run_postprocess(proposal, counts)}


def run_audit_demo(
    chain: Chain,
    providers: int = 4,
    seed: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
    workdir: Path | None = None,
) -> AuditReport:
    if providers < 3:
        raise ValueError("the audit needs at least 3 providers (the bounty's minimum)")
    phases: list[Phase] = []
    rng = np.random.default_rng(seed)
    logs = impression_logs(rng, providers)
    baseline = catalogue_baseline(rng)
    with tempfile.TemporaryDirectory(prefix="market-audit-") as tmp:
        work = workdir or Path(tmp)
        clock = DemoClock()
        with ExitStack() as running:
            progress("deploying the market and starting three heavy nodes")
            with _phase(phases, "deploy, start heavy nodes"):
                market = Sandbox.deploy(chain)
                committee = running.enter_context(running_committee(market, work, clock))
                buyer = market.account(BUDGET)

            progress(f"staking {providers} platforms' impression logs")
            with _phase(phases, "stake datasets"):
                platforms = [market.dataset() for _ in range(providers)]

            progress("posting the audit")
            with _phase(phases, "post bounty"):
                deadline = chain.now() + 3_600
                terms = audit_proposal(len(committee), deadline, baseline, providers - 1)
                view = market.post_proposal(buyer, parse_proposal(terms))
                job_id = view.job_id

            progress("light nodes: policy, count, share, seal, submit")
            impressions: dict[str, int] = {}
            with _phase(phases, "light nodes submit"):
                seen = proposal_for(market.escrow, view)  # what a light node fetches
                config = seen.round_config(str(job_id))
                directory = Directory(market.staking)
                http = requests.Session()
                for (owner, dataset_id), log in zip(platforms, logs, strict=True):
                    decision = evaluate(Policy.default(), seen, buyer.address, view.accepted)
                    if decision.verdict != "accept":
                        raise RuntimeError("; ".join(decision.reasons))
                    records, _ = run_map(seen, log)
                    light = LightNode(owner, market.escrow, market.staking, http, None, directory)
                    light.submit(view, config, dataset_id, records)
                    impressions["0x" + dataset_id.hex()] = len(log)

            progress("the committee reduces and settles after the deadline")
            with _phase(phases, "secure reduce + finalize"):
                state = settle(market, clock, job_id, deadline)
                document = result_document(market, job_id, committee)
    fees = {m: market.staking.heavy_node(m).fees_earned for m in committee}
    return report(seen, document.result, logs, impressions, job_id, state, baseline, fees,
                  refund_of(market.escrow, job_id), phases)  # fmt: skip


def report(
    proposal: Proposal,
    result: dict[str, Any],
    logs: list[pd.DataFrame],
    impressions: dict[str, int],
    job_id: int,
    state: JobState,
    baseline: dict[str, float],
    fees: dict[str, int],
    refund: int,
    phases: list[Phase],
) -> AuditReport:
    """The secure figures (from the released counts) beside the plaintext union's, and the
    bound the job's stated noise puts on their difference."""
    items = item_names()
    union = pd.concat(logs)["item"].value_counts()
    plain = [int(union.get(n, 0)) for n in items]
    released = [float(v) for v in result["values"]]
    privacy = result["privacy"]
    counts = next(g for g in privacy["noise"] if g["group"] == "counts")
    shares = int(privacy["noise_shares"])
    l1 = noise_l1_bound(len(items) * shares, counts["scale"], privacy["mechanism"], FAILURE)
    bound = figure_error_bound(l1, float(np.maximum(released, 0).sum()))
    return AuditReport(
        providers=len(logs),
        impressions=impressions,
        job_id=job_id,
        state=state,
        items=items,
        epsilon=float(privacy["epsilon"]),
        mechanism=privacy["mechanism"],
        noise_scale=float(counts["scale"]),
        noise_shares=shares,
        error_bound=bound,
        secure_counts=released,
        plain_counts=plain,
        secure=figures(proposal, released),
        plain=figures(proposal, plain),
        baseline=baseline,
        fee_per_node=fees,
        refund=refund,
        phases=phases,
    )
