"""`market demo --kind ensemble`: one ensemble bounty from posting to claims, through the real
node code on the embedded chain.

A buyer wants a digits classifier no worse than any it can buy, from model holders who will
not hand over their models. It publishes a public evaluation set (validation rows with labels,
test rows without; content-addressed, `ipfs://`) and posts an `ensemble` bounty. Each holder
trained its own model family on its own data and saved it on its own disk; its light node
scores the evaluation set with it and Shamir-shares the probabilities to three heavy nodes
(FastAPI on loopback). After the deadline (the nodes' clock is moved instead of waiting) the
committee reconstructs each model's validation statistic, evaluates the candidate blends on
validation, chooses the weights, releases only the weighted ensemble's test probabilities, and
finalizes; each holder claims its weight's share.
The buyer scores the released ensemble on its own test labels.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from compute.ensemble import plain_ensemble
from compute.policy import Policy
from compute.proposal import parse_proposal
from market.bench.ensemble import Holders, train_holders
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
from market.escrow.documents import ResultDocument
from market.sandbox import Sandbox
from market.storage import open_storage
from nodes.evalset import load_model, publish_evaluation
from nodes.light import Directory, LightNode, LightService, LightState, LocalData

BUDGET = 1_000 * TOKEN
FEE_BPS = 500


@dataclass
class EnsembleDemoReport:
    job_id: int
    state: JobState
    evaluation_uri: str
    validation_rows: int
    test_rows: int
    accuracy: dict[str, float]
    """Each model's accuracy on the test rows (the buyer could only know this from the holders;
    shown here for the table)."""
    weights: dict[str, float]
    validation_accuracy: dict[str, float]
    """Each model's validation accuracy, as the committee reconstructed it."""
    earnings: dict[str, int]
    """What each holder claimed, by model name."""
    ensemble: float
    """The released ensemble's accuracy on the buyer's test labels."""
    best_model: str
    """The model with the best test accuracy (the member the ensemble must not fall below)."""
    plain_ensemble: float
    max_probability_error: float
    candidates: list[dict[str, Any]]
    """Every candidate the committee evaluated (name, weights by model name, validation
    accuracy), the best model alone first, as the result document lists them."""
    chosen: int
    """The index of the candidate whose weights were released."""
    budget: int
    fee_per_node: dict[str, int]
    refund: int
    phases: list[Phase] = field(default_factory=list)


def run_ensemble_demo(
    chain: Chain,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
    workdir: Path | None = None,
    models: int = 6,
) -> EnsembleDemoReport:
    """The job with the first `models` of the bench's holders (`market.bench.ensemble`); the
    proposal needs three (`privacy.min_participants`), so fewer abort as `too_few_participants`."""
    phases: list[Phase] = []
    progress("model holders train their models on their own data")
    with _phase(phases, "holders train"):
        holders = train_holders(seed, models)
    with tempfile.TemporaryDirectory(prefix="market-ensemble-") as tmp, ExitStack() as running:
        work = workdir or Path(tmp)
        clock = DemoClock()
        progress("deploying the market and starting three heavy nodes")
        with _phase(phases, "deploy, start heavy nodes"):
            market = Sandbox.deploy(chain)
            committee = running.enter_context(running_committee(market, work, clock))
            buyer = market.account(BUDGET)

        progress("the buyer publishes its evaluation set and posts the bounty")
        with _phase(phases, "publish, post bounty"):
            terms = publish_evaluation(holders.evaluation, open_storage())
            deadline = chain.now() + 3_600
            proposal = parse_proposal(_proposal(len(committee), deadline, terms.model_dump()))
            job_id = market.post_proposal(buyer, proposal).job_id

        progress("holders' light nodes: policy, their model on the evaluation set, share, submit")
        owners, names = {}, {}
        with _phase(phases, "light nodes submit"):
            directory = Directory(market.staking)
            policy = Policy(allowed_kinds=frozenset({"ensemble"}))
            for name, model in holders.models.items():
                path = work / f"{name}.joblib"  # the holder's own disk
                joblib.dump(model, path)
                owner, dataset_id = market.dataset()
                light = LightNode(owner, market.escrow, market.staking, directory=directory)
                service = LightService(
                    light,
                    [LocalData(dataset_id, None, model=load_model(path))],
                    policy,
                    LightState(str(work / f"light-{name}.db")),
                    clock=clock,
                )
                ((_, _, status, reason),) = service.poll()
                if status != "submitted":
                    raise RuntimeError(f"holder {name}: {status} ({reason})")
                owners[name], names["0x" + dataset_id.hex()] = owner, name

        progress("the committee fits the weights and settles after the deadline")
        with _phase(phases, "secure fit + ensemble + finalize"):
            state = settle(market, clock, job_id, deadline)

        progress("holders claim their payouts")
        with _phase(phases, "claims"):
            document = result_document(market, job_id, committee)
            tree = document.payouts
            assert tree is not None
            earnings = {}
            for name, owner in owners.items():
                amount = tree.amount(owner.address) if owner.address in tree else 0
                if amount:
                    market.escrow.claim(owner, job_id, owner.address, amount,
                                        tree.proof(owner.address))  # fmt: skip
                earnings[name] = amount
    market.assert_accounting()
    fees = {m: market.staking.heavy_node(m).fees_earned for m in committee}
    report = _report(holders, document, names, earnings)
    return EnsembleDemoReport(
        job_id=job_id,
        state=state,
        evaluation_uri=terms.evaluation.uri,
        budget=BUDGET,
        fee_per_node=fees,
        refund=refund_of(market.escrow, job_id),
        phases=phases,
        **report,
    )


def _proposal(committee_size: int, deadline: int, terms: dict) -> dict:
    return {
        "version": 1,
        "kind": "ensemble",
        "title": "A digits classifier from models I never see",
        "map": {"function": "model_probabilities", "output": {"fields": []}},
        "reduce": {"op": "weighted_sum", "scheme": "shamir", "threshold": 2,
                   "threat_model": "malicious-detect"},
        "privacy": {"min_participants": 3},
        "economics": {"budget": BUDGET, "fee_bps": FEE_BPS, "payout_rule": "ensemble_weight"},
        "deadline": deadline,
        "committee_size": committee_size,
        "quorum": 2,
        "ensemble": terms,
    }  # fmt: skip


def _report(
    holders: Holders, document: ResultDocument, names: dict[str, str], earnings: dict[str, int]
) -> dict[str, Any]:
    """What the committee released, by model name, with the plaintext ensemble of the same
    models beside it and every accuracy on the buyer's test labels."""
    summary = document.result["ensemble"]
    probabilities = {name: holders.probabilities(name) for name in holders.models}
    plain = plain_ensemble(
        {n: p[0] for n, p in probabilities.items()},
        {n: p[1] for n, p in probabilities.items()},
        holders.evaluation.y_val,
        holders.evaluation.classes,
    )
    layout = holders.evaluation.layout
    released = np.asarray(document.result["values"]).reshape(layout.n_test, layout.classes)
    return {
        "validation_rows": layout.n_val,
        "test_rows": layout.n_test,
        "accuracy": {n: holders.test_accuracy(p[1]) for n, p in probabilities.items()},
        "weights": {names[d]: w for d, w in summary["weights"].items()},
        "validation_accuracy": {names[d]: a for d, a in summary["validation_accuracy"].items()},
        "earnings": earnings,
        "ensemble": holders.test_accuracy(released),
        "best_model": max(probabilities, key=lambda n: holders.test_accuracy(probabilities[n][1])),
        "plain_ensemble": holders.test_accuracy(plain.probabilities),
        "max_probability_error": float(np.abs(released - plain.probabilities).max()),
        "candidates": [
            {**c, "weights": {names[d]: w for d, w in c["weights"].items()}}
            for c in summary["candidates"]
        ],
        "chosen": summary["chosen"],
    }


def format_report(report: EnsembleDemoReport) -> list[Any]:
    """What `market demo --kind ensemble` prints: lines (rich markup) and tables."""
    from rich.table import Table

    lines: list[Any] = []
    lines.append(
        f"[bold]Job {report.job_id}[/]: a secure weighted ensemble of {len(report.weights)} "
        f"holders' models, {report.validation_rows} validation and {report.test_rows} test rows "
        f"({report.evaluation_uri}), state [bold]{report.state.name}[/]"
    )
    table = Table(title="Models (accuracy on the buyer's test labels)")
    for column in ("model", "test accuracy", "validation accuracy", "weight", "paid (DATA)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in sorted(report.accuracy, key=lambda n: -report.accuracy[n]):
        table.add_row(
            name, f"{report.accuracy[name]:.4f}", f"{report.validation_accuracy[name]:.4f}",
            f"{report.weights[name]:.4f}", _tokens(report.earnings[name]),
        )  # fmt: skip
    table.add_section()
    table.add_row("ensemble", f"{report.ensemble:.4f}", "", "", "")
    lines.append(table)
    best = report.accuracy[report.best_model]
    chosen, alone = report.candidates[report.chosen], report.candidates[0]
    lines.append(
        f"  weights chosen on validation: {chosen['name']} "
        f"({chosen['validation_accuracy']:.4f}; the best model alone "
        f"{alone['validation_accuracy']:.4f}, {len(report.candidates) - 1} blends evaluated)"
    )
    lines.append(
        f"  ensemble test accuracy {report.ensemble:.4f}, best model ({report.best_model}) "
        f"{best:.4f}: {report.ensemble - best:+.4f}; plaintext ensemble "
        f"{report.plain_ensemble:.4f}, largest probability difference "
        f"{report.max_probability_error:.1e}"
    )
    fees = ", ".join(_tokens(f) for f in report.fee_per_node.values())
    lines.append(f"  heavy node fees {fees} DATA; buyer refund {_tokens(report.refund)} DATA")
    return lines


def _tokens(amount: int) -> str:
    return f"{amount / TOKEN:,.4f}"
