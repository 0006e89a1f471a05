"""What a heavy node signs for a round that reached a result: the result document (the decoded
aggregate, the participants, the DP budget spent, for an op that clips how many values fell
outside the bounds, for an ensemble its weights, for a valuation job its scores rule) with its
payout tree, and the EIP-712 `Result` over it, the same on every
honest member. Payouts: the pool (`budget - fee`) in proportion to each owner's share, or a
valuation job's influence with slashes for harm within each owner's signed cap."""

from __future__ import annotations

from typing import Any

from compute.economics import BPS, payout_pool
from compute.ensemble import WEIGHT_SCALE
from compute.kinds import ValuationSpec
from compute.kinds.base import Settlement
from compute.messages import Result as RoundResult
from compute.messages import RoundConfig
from compute.products import QueryRejected, check_totals
from market.escrow import JobView, Result, Slash, SlashConsent
from market.escrow.documents import ResultDocument
from market.staking.view import StakeView
from market.valuation.merkle import PayoutTree
from market.valuation.payouts import split_by_weights
from market.valuation.tip.settle import settle_valuation
from nodes import api
from nodes.store import Store


def result_uri(job_id: int) -> str:
    """Where a job's result document is: `GET /jobs/{id}/result` on any committee member."""
    return "committee:" + api.result(job_id)


def build(
    view: JobView,
    config: RoundConfig,
    spec: ValuationSpec | None,
    outcome: RoundResult,
    stakes: StakeView,
    store: Store,
    *,
    proposal: Any = None,
) -> tuple[ResultDocument, Result, tuple[SlashConsent, ...]]:
    """The result document, the `Result` to sign, and the consents its slashes need.
    `proposal`: the job's, when the node reads proposals: a kind whose `settle` decides the
    payouts (a forecast) settles here, and its `summary` joins the document. A valuation job
    (`spec`) settles on the totals its round opened (`compute.products`)."""
    records = {d: stakes.dataset(bytes.fromhex(d.removeprefix("0x"))) for d in outcome.participants}
    # Each owner's share: one per dataset, or for an ensemble its models' fitted weights.
    fit = outcome.fit
    shares = (
        dict(zip(outcome.participants, (int(w) for w in fit.weights), strict=True))
        if fit is not None
        else dict.fromkeys(outcome.participants, 1)
    )
    owners: dict[str, int] = {}
    for dataset, record in records.items():
        owners[record.owner] = owners.get(record.owner, 0) + shares[dataset]
    pool = payout_pool(view.budget, view.fee_bps)
    payouts = split_pool(pool, owners)
    slashes: tuple[Slash, ...] = ()
    slashed_to_payouts = 0
    consents: tuple[SlashConsent, ...] = ()
    valuation: dict[str, Any] | None = None
    if spec is not None:
        valuation = valuation_summary(config, outcome)
        if valuation["scores"] is not None:
            influence, slashes, consents, slashed_to_payouts = by_influence(
                view, spec, store, records, valuation
            )
            # No positive score pays the pool out equally (the slashed stake is burned):
            # what the buyer gets back never depends on the scores.
            if influence:
                payouts = influence
            else:
                valuation["rule"] = "equal (no positive score)"
    kind_summary: dict[str, Any] | None = None
    if proposal is not None:
        kind = proposal.job_kind
        bodies = store.submission_bodies(view.job_id)
        settled = kind.settle(
            proposal, config, outcome, pool,
            {d: r.stake for d, r in records.items()},
            {d: int(bodies[d]["participation_bps"]) for d in records},
        )  # fmt: skip
        kind_summary = dict(kind.summary(proposal, config, outcome))
        if settled is not None:
            payouts, slashes, consents, slashed_to_payouts = by_settlement(settled, records, bodies)
            kind_summary.update(settled.summary)
    tree = PayoutTree.build(payouts) if payouts else None
    summary = {
        "op": str(config.reduction.op),
        "values": [float(v) for v in outcome.values],
        "count": outcome.aggregate.count,
        "participants": list(outcome.participants),
        "privacy": published_spend(config, outcome),
    }
    clipped = outcome.aggregate.clipped
    if clipped is not None:
        # The total over the participants, reconstructed under sharing like the values (and
        # with DP, noised like them); no provider's own count is ever reconstructed.
        field = config.reduction.field
        summary["clipped"] = clipped
        summary["clip_bounds"] = {"lo": field.lo, "hi": field.hi}
    if valuation is not None:
        summary["valuation"] = valuation
    if kind_summary:
        summary[proposal.kind] = kind_summary
    if fit is not None:
        plan = config.ensemble
        assert plan is not None
        summary["ensemble"] = {
            "classes": plan.layout.classes,
            "test_rows": plan.layout.n_test,
            "validation_accuracy": dict(
                zip(outcome.participants, (float(a) for a in fit.accuracy), strict=True)
            ),
            "weights": {d: w / WEIGHT_SCALE for d, w in shares.items()},
            "weight_scale": WEIGHT_SCALE,
            # Every candidate the committee evaluated on validation (the best model alone
            # first), and the index of the one whose weights these are.
            "candidates": [
                {
                    "name": c.name,
                    "weights": dict(
                        zip(
                            outcome.participants,
                            (int(w) / WEIGHT_SCALE for w in c.weights),
                            strict=True,
                        )
                    ),
                    "validation_accuracy": c.accuracy,
                }
                for c in fit.candidates
            ],
            "chosen": fit.chosen,
            "values": "the weighted ensemble's probabilities, test row by test row",
        }
    document = ResultDocument(view.job_id, summary, tree)
    result = Result(
        job_id=view.job_id,
        result_hash=document.hash,
        result_uri=result_uri(view.job_id),
        payout_root=tree.root if tree else bytes(32),
        payout_total=(tree.total if tree else 0) - slashed_to_payouts,
        participants=len(outcome.participants),
        slashed_to_payouts=slashed_to_payouts,
        slashes=slashes,
    )
    return document, result, consents


def published_spend(config: RoundConfig, outcome: RoundResult) -> dict[str, Any] | None:
    """What the release cost, for a buyer to price its questions and a provider to check its
    ledger: the (epsilon, delta) spent (what each provider's light node charged its dataset's
    budget), the mechanism, and each group's noise scale (OpenDP's Laplace `b` or Gaussian
    standard deviation, in encoded units: divide a sum's by `fixed_point_scale`) with its
    sensitivity, and how many heavy nodes' noise is in the result."""
    spent, plan = outcome.privacy, config.privacy
    if spent is None:
        return None
    published: dict[str, Any] = {"epsilon": spent.epsilon, "delta": spent.delta}
    published["mechanism"] = spent.mechanism
    published["noise_shares"] = spent.noise_shares
    published["unit"] = spent.unit
    published["budget_spent"] = {"epsilon": spent.epsilon, "delta": spent.delta}
    if plan is not None:
        published["fixed_point_scale"] = config.reduction.field.scale
        published["noise"] = [
            {"group": g.name, "scale": g.scale, "sensitivity": g.sensitivity,
             "epsilon": g.epsilon, "delta": g.delta}
            for g in plan.groups
        ]  # fmt: skip
    return published


def valuation_summary(config: RoundConfig, outcome: RoundResult) -> dict[str, Any]:
    """What the committee opened: each participant's total influence `q . G_p` (a void total,
    beyond any honest provider's reach, scores 0: no payout and no slash), the query's squared
    norm, and the rule. A query that opened beyond its terms (the buyer's shares out of range
    or not on one polynomial) voids every total: the pool is split equally."""
    plan = config.products
    assert plan is not None
    try:
        totals = check_totals(outcome.aggregate.total, plan.k, plan.scale_bits)
    except QueryRejected as exc:
        return {"scores": None, "rule": "equal", "reason": str(exc)}
    influence = totals.influence()
    participants = outcome.participants
    return {
        "scores": {
            d: (0.0 if v is None else v) for d, v in zip(participants, influence, strict=True)
        },
        "totals": {
            d: None if t is None else str(t)
            for d, t in zip(participants, totals.totals, strict=True)
        },  # fmt: skip
        "void": [d for d, t in zip(participants, totals.totals, strict=True) if t is None],
        "scale_bits": plan.scale_bits,
        "query_norm_squared": str(totals.query_norm_squared),
        "rule": "influence",
        "by": "the committee's totals (compute.products)",
    }


def by_influence(
    view: JobView,
    spec: ValuationSpec,
    store: Store,
    records: dict[str, Any],
    valuation: dict[str, Any],
) -> tuple[dict[str, int], tuple[Slash, ...], tuple[SlashConsent, ...], int]:
    """Payouts for positive influence, slashes for harm within each signed cap (and the
    owners' consents to them)."""
    bodies = store.submission_bodies(view.job_id)
    settled = settle_valuation(
        valuation["scores"],
        {d: r.owner for d, r in records.items()},
        budget=view.budget,
        fee_bps=view.fee_bps,
        n_accepted=max(len(view.accepted), 1),
        stakes={d: r.stake for d, r in records.items()},
        caps_bps={d: int(bodies[d]["participation_bps"]) for d in records},
        job_max_slash_bps=view.max_slash_bps,
        slashed_to_payouts=spec.slashed_to == "payouts",
        harm_threshold=spec.harm_threshold,
        full_slash_at=spec.full_slash_at,
    )
    # In the contract's ascending dataset order (`settle_valuation` keeps it), each slash
    # beside its owner's consent.
    slashed = {d: a for d, a in settled.slashes.items() if a > 0}
    slashes = tuple(Slash(bytes.fromhex(d[2:]), a) for d, a in slashed.items())
    consents = tuple(
        SlashConsent(
            int(bodies[d]["participation_bps"]), bytes.fromhex(bodies[d]["participation"][2:])
        )
        for d in slashed
    )
    valuation["payouts_by_dataset"] = {d: str(a) for d, a in settled.payouts_by_dataset.items()}
    valuation["slashes"] = {d: str(a) for d, a in slashed.items()}
    valuation["severity_bps"] = dict(settled.severity_bps)
    return settled.payouts, slashes, consents, settled.settlement.slashed_to_payouts


def by_settlement(
    settled: Settlement, records: dict[str, Any], bodies: dict[str, dict[str, Any]]
) -> tuple[dict[str, int], tuple[Slash, ...], tuple[SlashConsent, ...], int]:
    """A kind's `Settlement` as the contract takes it: payouts by owner (one leaf each), slashes
    in ascending dataset order within each signed cap, each beside its owner's consent."""
    payouts: dict[str, int] = {}
    for dataset, amount in settled.payouts.items():
        owner = records[dataset].owner
        payouts[owner] = payouts.get(owner, 0) + int(amount)
    slashed = sorted(
        ((d, int(a)) for d, a in settled.slashes.items() if a > 0), key=lambda s: int(s[0], 16)
    )
    for dataset, amount in slashed:
        cap = records[dataset].stake * int(bodies[dataset]["participation_bps"]) // BPS
        if amount > cap:
            raise ValueError(f"{dataset}: a slash of {amount} exceeds its signed cap of {cap}")
    slashes = tuple(Slash(bytes.fromhex(d[2:]), a) for d, a in slashed)
    consents = tuple(
        SlashConsent(
            int(bodies[d]["participation_bps"]), bytes.fromhex(bodies[d]["participation"][2:])
        )
        for d, _ in slashed
    )
    return (
        {o: a for o, a in payouts.items() if a > 0},
        slashes,
        consents,
        int(settled.slashed_to_payouts),
    )


def split_pool(pool: int, owners: dict[str, int]) -> dict[str, int]:
    """The pool split in proportion to each owner's share (aggregate jobs: its number of
    participating datasets; ensembles: its models' fitted weights), one leaf per owner."""
    if not owners:
        return {}
    paid = split_by_weights(pool, owners)
    return {o: a for o, a in paid.items() if a > 0}
