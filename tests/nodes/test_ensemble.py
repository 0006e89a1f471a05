"""An ensemble job from bounty to claims on the embedded chain, through the real light and heavy
nodes over HTTP: model holders keep their models (different families, trained here on their own
parts of scikit-learn's digits) and share only their class probabilities on the job's public
evaluation set; the committee fits the weights on the validation rows under Shamir sharing,
releases the weighted ensemble's test probabilities, and pays each holder by its weight."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from eth_account.signers.local import LocalAccount
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

from compute.ensemble import align_probabilities, plain_ensemble
from compute.policy import Policy
from compute.proposal import Proposal, parse_proposal
from market.chain import Chain
from market.escrow import JobState
from market.escrow.documents import ResultDocument
from market.sandbox import TOKEN, Sandbox
from market.storage import open_storage, uri_for
from market.valuation.payouts import split_by_weights
from nodes.evalset import EvaluationSet, load_model, publish_evaluation
from nodes.jobs import JobSpecs, job_params
from nodes.light import LightNode, LightService, LightState, LocalData
from tests.nodes.harness import Committee

BUDGET = 600 * TOKEN
FEE_BPS = 500
POOL = BUDGET - BUDGET * FEE_BPS // 10_000
MODELS = {
    "logistic": lambda: LogisticRegression(max_iter=2_000),
    "naive_bayes": GaussianNB,
    "tree": lambda: DecisionTreeClassifier(max_depth=6, random_state=0),
    "knn": lambda: KNeighborsClassifier(5),
}


@dataclass
class EnsembleMarket:
    committee: Committee
    buyer: LocalAccount
    job_id: int
    deadline: int
    proposal: Proposal
    evaluation: EvaluationSet
    y_test: np.ndarray
    holders: dict[str, tuple[LocalAccount, str]]
    """model name -> (owner, dataset id)"""
    probabilities: dict[str, tuple[np.ndarray, np.ndarray]]
    """model name -> its validation and test probabilities (what only its holder sees)"""

    @property
    def sandbox(self) -> Sandbox:
        return self.committee.market

    @property
    def endpoints(self) -> list[str]:
        return [
            self.sandbox.staking.heavy_node(a.address).endpoint for a in self.committee.accounts
        ]


@pytest.fixture
def committee(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Committee]:
    monkeypatch.setenv("MARKET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MARKET_IPFS_API", raising=False)
    with Chain.embedded() as chain:
        sandbox = Sandbox.deploy(chain)
        c = Committee(sandbox, tmp_path, config_for=JobSpecs(sandbox.escrow))
        c.start(3)
        try:
            yield c
        finally:
            c.stop()


def _proposal(committee: Committee, evaluation: Any, deadline: int) -> Proposal:
    return parse_proposal(
        {
            "version": 1,
            "kind": "ensemble",
            "title": "A digits classifier from models I never see",
            "map": {"function": "model_probabilities", "output": {"fields": []}},
            "reduce": {"op": "weighted_sum", "scheme": "shamir", "threshold": 2,
                       "threat_model": "semi-honest"},
            "privacy": {"min_participants": 3},
            "economics": {"budget": BUDGET, "fee_bps": FEE_BPS, "payout_rule": "ensemble_weight"},
            "deadline": deadline,
            "committee_size": len(committee.accounts),
            "quorum": 2,
            "ensemble": evaluation,
        }
    )  # fmt: skip


def _post(committee: Committee, proposal: Proposal, buyer: LocalAccount, ready: bool = True) -> int:
    """Publish and post `proposal`, draw its committee and (with `ready`) wait until the
    heavy nodes accepted it."""
    market = committee.market
    if ready:
        return market.post_proposal(buyer, proposal).job_id
    uri = uri_for(open_storage().put(proposal.canonical_bytes()))
    job_id = market.escrow.post_job(buyer, job_params(proposal, uri))
    market.draw(job_id)
    return job_id


def _holder(
    tmp_path: Path, committee: Committee, name: str, owner: LocalAccount, data: LocalData
) -> LightService:
    return LightService(
        LightNode(owner, committee.market.escrow, committee.market.staking),
        [data],
        Policy(allowed_kinds=frozenset({"ensemble"})),
        LightState(str(tmp_path / f"light-{name}.db")),
        clock=committee.clock,
    )


def _market(tmp_path: Path, committee: Committee) -> EnsembleMarket:
    """The buyer publishes the evaluation set and posts; four holders train, save their models
    on their own disks and submit their probabilities."""
    sandbox = committee.market
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(5).permutation(len(y))
    x, y = x[order], y[order]
    private, public = np.array_split(np.arange(480), len(MODELS)), np.arange(480, len(y))
    val, test = public[: len(public) // 2], public[len(public) // 2 :]
    evaluation = EvaluationSet(x[val], y[val], x[test], classes=10)
    terms = publish_evaluation(evaluation, open_storage())
    assert terms.evaluation.uri.startswith("ipfs://")

    buyer = sandbox.account(2 * BUDGET)
    deadline = sandbox.chain.now() + 3_600
    proposal = _proposal(committee, terms.model_dump(), deadline)
    job_id = _post(committee, proposal, buyer)

    holders, probabilities = {}, {}
    for (name, make), rows in zip(MODELS.items(), private, strict=True):
        model = make().fit(x[rows], y[rows])
        path = tmp_path / f"{name}.joblib"
        joblib.dump(model, path)
        owner, dataset_id = sandbox.dataset(stake=10 * TOKEN)
        data = LocalData(dataset_id, None, model=load_model(path))
        ((_, _, status, reason),) = _holder(tmp_path, committee, name, owner, data).poll()
        assert status == "submitted", reason
        assert reason == f"probabilities on {len(val) + len(test)} rows to heavy nodes [1, 2, 3]"
        holders[name] = (owner, "0x" + dataset_id.hex())
        probabilities[name] = tuple(
            align_probabilities(model.predict_proba(part), model.classes_, 10)
            for part in (x[val], x[test])
        )
    return EnsembleMarket(committee, buyer, job_id, deadline, proposal, evaluation, y[test],
                          holders, probabilities)  # fmt: skip


def _settle(market: EnsembleMarket) -> ResultDocument:
    market.committee.clock.advance(market.deadline - market.committee.clock() + 1)
    assert market.committee.wait_for(market.job_id) is JobState.FINALIZED
    raw = requests.get(f"{market.endpoints[0]}/jobs/{market.job_id}/result", timeout=10).content
    return ResultDocument.from_bytes(raw, market.sandbox.escrow.job(market.job_id).result_hash)


@pytest.mark.slow
def test_ensemble_job_releases_the_weighted_ensemble_and_pays_by_weight(
    tmp_path: Path, committee: Committee
) -> None:
    market = _market(tmp_path, committee)
    document = _settle(market)
    sandbox = market.sandbox
    summary = document.result
    ids = {name: dataset for name, (_, dataset) in market.holders.items()}

    # The committee released the weighted ensemble's test probabilities, equal to the
    # plaintext ensemble (same fit, same weights, in floats) within the fixed point.
    plain = plain_ensemble(
        {ids[n]: p[0] for n, p in market.probabilities.items()},
        {ids[n]: p[1] for n, p in market.probabilities.items()},
        market.evaluation.y_val,
        10,
    )
    secure = np.asarray(summary["values"]).reshape(len(market.y_test), 10)
    assert np.abs(secure - plain.probabilities).max() < 1e-3
    assert np.array_equal(secure.argmax(axis=1), plain.probabilities.argmax(axis=1))
    ensemble = summary["ensemble"]
    assert sorted(ensemble["weights"]) == sorted(ids.values()) == list(plain.models)
    for dataset, accuracy, weight in zip(plain.models, plain.accuracy, plain.weights, strict=True):
        assert ensemble["validation_accuracy"][dataset] == pytest.approx(accuracy, abs=1e-4)
        assert ensemble["weights"][dataset] == pytest.approx(weight, abs=1e-4)
    # The candidates: the best model alone, then the blends; the committee chose the one
    # with the best validation accuracy, a blend here, the same as the plaintext fit.
    candidates = ensemble["candidates"]
    assert candidates[0]["name"] == "best model" and len(candidates) == 4
    assert max(candidates[0]["weights"].values()) == 1.0
    assert ensemble["chosen"] == plain.chosen > 0
    chosen = candidates[ensemble["chosen"]]
    assert chosen["weights"] == ensemble["weights"]
    assert chosen["validation_accuracy"] == max(c["validation_accuracy"] for c in candidates)
    assert chosen["validation_accuracy"] > candidates[0]["validation_accuracy"]
    # On the held-out test rows (labels the buyer kept) the ensemble is better than the best
    # model.
    accuracy = {n: (p[1].argmax(axis=1) == market.y_test).mean()
                for n, p in market.probabilities.items()}  # fmt: skip
    ensemble_accuracy = (secure.argmax(axis=1) == market.y_test).mean()
    assert ensemble_accuracy > max(accuracy.values())

    # Payouts follow the fitted weights; claims empty the pool; the books balance.
    tree = document.payouts
    assert tree is not None and tree.total == POOL
    fixed = {market.holders[n][0].address: round(ensemble["weights"][ids[n]] * 2**16)
             for n in market.holders}  # fmt: skip
    for owner, amount in split_by_weights(POOL, fixed).items():
        assert tree.amount(owner) == amount
    best = max(ids, key=lambda n: ensemble["weights"][ids[n]])
    assert best == max(accuracy, key=accuracy.get) == "logistic"
    assert tree.amount(market.holders[best][0].address) == max(
        tree.amount(o.address) for o, _ in market.holders.values() if o.address in tree
    )
    sandbox.claim_all(market.job_id, tree)
    assert sandbox.token.balance_of(market.buyer.address) == BUDGET  # nothing refunded
    assert sandbox.escrow.job(market.job_id).unclaimed == 0
    sandbox.assert_accounting()


def test_ensemble_jobs_take_models_and_only_the_published_evaluation_set(
    tmp_path: Path, committee: Committee
) -> None:
    sandbox = committee.market
    x, y = load_digits(return_X_y=True)
    evaluation = EvaluationSet(x[:30], y[:30], x[30:40], classes=10)
    terms = publish_evaluation(evaluation, open_storage()).model_dump()
    buyer = sandbox.account(4 * BUDGET)
    deadline = sandbox.chain.now() + 3_600

    # A table dataset is refused an ensemble job, with the reason.
    job_id = _post(committee, _proposal(committee, terms, deadline), buyer)
    owner, dataset_id = sandbox.dataset(stake=10 * TOKEN)
    table = LocalData(dataset_id, lambda: None)
    decisions = _holder(tmp_path, committee, "table", owner, table).poll()
    assert [(j, s) for j, _, s, _ in decisions] == [(job_id, "refused")]
    assert "ensemble jobs take a model" in decisions[0][3]

    # A job naming bytes other than the published ones: the drawn heavy nodes do not accept it,
    # so no holder ever sends it anything.
    forged = copy.deepcopy(terms)
    forged["evaluation"]["sha256"] = "0" * 64
    bad_job = _post(committee, _proposal(committee, forged, deadline + 1), buyer, ready=False)
    path = tmp_path / "model.joblib"
    joblib.dump(GaussianNB().fit(x[40:200], y[40:200]), path)
    holder_owner, holder_id = sandbox.dataset(stake=10 * TOKEN)
    model = LocalData(holder_id, None, model=load_model(path))
    light = _holder(tmp_path, committee, "m", holder_owner, model)
    time.sleep(2.5)  # the nodes look at new jobs every second
    decisions = {j: (s, r) for j, _, s, r in light.poll()}
    assert bad_job not in decisions and bad_job in light.staffing
    assert decisions[job_id][0] == "submitted"
    assert sandbox.escrow.job(bad_job).accepted == ()
    status = requests.get(f"{committee_endpoint(committee)}/jobs/{bad_job}", timeout=10)
    assert status.status_code == 404


def committee_endpoint(committee: Committee) -> str:
    return committee.market.staking.heavy_node(committee.accounts[0].address).endpoint


@pytest.mark.slow
def test_two_of_three_heavy_nodes_finish_the_fit_and_a_restarted_one_resumes(
    tmp_path: Path, committee: Committee
) -> None:
    """Shamir 2-of-3: with one member down from before the deadline the other two fit the same
    weights and settle; a member restarted after the submissions rebuilds its round from its
    store and signs the same result."""
    market = _market(tmp_path, committee)
    down, restarted = committee.accounts[2], committee.accounts[0]
    committee.kill(down)
    committee.restart(restarted)
    document = _settle(market)
    ensemble = document.result["ensemble"]
    plain = plain_ensemble(
        {market.holders[n][1]: p[0] for n, p in market.probabilities.items()},
        {market.holders[n][1]: p[1] for n, p in market.probabilities.items()},
        market.evaluation.y_val,
        10,
    )
    assert [ensemble["weights"][d] for d in plain.models] == pytest.approx(
        list(plain.weights), abs=1e-4
    )
    assert market.sandbox.staking.heavy_node(down.address).fees_earned == 0
    assert market.sandbox.staking.heavy_node(restarted.address).fees_earned > 0
