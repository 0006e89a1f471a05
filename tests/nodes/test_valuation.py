"""A valuation (TIP) job from bounty to claims on the embedded chain, through the real light and
heavy nodes over HTTP: providers score their rows under the buyer's CKKS key, the committee
agrees on the participants and counts the rows under Shamir sharing, the buyer decrypts and
reports the totals, and the committee pays by influence and slashes the harmful provider."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from eth_account.signers.local import LocalAccount

from compute.policy import Policy
from compute.proposal import parse_proposal
from market.chain import Chain
from market.escrow import JobState
from market.escrow.documents import ResultDocument
from market.sandbox import TOKEN, Sandbox
from market.storage import open_storage
from market.valuation.tip import SoftmaxRegression, TenSealCKKS, TrainConfig, train
from market.valuation.tip.data import make_market
from market.valuation.tip.influence import (
    Projection,
    build_query,
    influence_scores,
    projected_gradients,
)
from market.valuation.tip.release import Publication, publish
from nodes.jobs import JobSpecs
from nodes.light import LightNode, LightService, LightState, LocalData
from nodes.valuation import publish_blobs, report_scores
from nodes.wire import sign_payload
from tests.nodes.harness import Committee

K = 256
SEED = 11
BUDGET = 1_000 * TOKEN
STAKE = 100 * TOKEN
FEE_BPS = 500
FEE_REMAINDER = BUDGET * FEE_BPS // 10_000 % 3
"""The fee is split among the three accepted members; what does not divide goes back."""
MAX_SLASH_BPS = 2_000
DECRYPT_WINDOW = 600


@dataclass
class ValuationMarket:
    committee: Committee
    publication: Publication
    buyer: LocalAccount
    job_id: int
    deadline: int
    endpoints: list[str]
    providers: dict[str, tuple[LocalAccount, str]]
    """quality -> (owner, dataset id)"""
    rows: dict[str, int]
    plain: dict[str, float]
    """quality -> the plaintext influence total the encrypted path must reproduce"""

    @property
    def sandbox(self) -> Sandbox:
        return self.committee.market


def _submitted(tmp_path: Path, committee: Committee) -> ValuationMarket:
    """Buyer publishes and posts; five providers of different quality score and submit."""
    sandbox = committee.market
    data = make_market("digits", seed=3)
    model = SoftmaxRegression(data.n_features, data.n_classes)
    config = TrainConfig()
    theta = train(model, *data.train, config)
    publication = publish(
        model, theta, config, data.train, data.eval, data.mean, data.scale,
        k=K, projection_seed=SEED, backend=TenSealCKKS(),
    )  # fmt: skip
    refs = publish_blobs(publication, open_storage())
    features = [f"px{i}" for i in range(data.n_features)]
    members = [a.address for a in committee.accounts]
    buyer = sandbox.account(10 * BUDGET)
    deadline = sandbox.chain.now() + 3_600
    proposal = parse_proposal(
        {
            "version": 1,
            "kind": "valuation",
            "title": "How much does your digits data help my classifier?",
            "map": {"function": "row_count", "output": {"fields": []}},
            "reduce": {"op": "count", "scheme": "shamir", "threshold": 2,
                       "threat_model": "semi-honest"},
            "privacy": {"min_participants": 3},
            "economics": {"budget": BUDGET, "fee_bps": FEE_BPS, "payout_rule": "influence",
                          "max_slash_bps": MAX_SLASH_BPS},
            "deadline": deadline,
            "committee_size": len(members),
            "quorum": 2,
            "valuation": {
                "tip": publication.terms.to_json(),
                "features": features,
                "label": "digit",
                **{name: ref.model_dump() for name, ref in refs.items()},
                "decrypt_window": DECRYPT_WINDOW,
            },
        }
    )  # fmt: skip
    job_id = sandbox.post_proposal(buyer, proposal).job_id

    policy = Policy(allowed_kinds=frozenset({"valuation"}), max_slash_bps=MAX_SLASH_BPS)
    projection = Projection(SEED, K, model.n_params)
    query = build_query(model, theta, data.train, data.eval, projection, config.weight_decay)
    providers, rows, plain = {}, {}, {}
    for provider in data.providers:
        owner, dataset_id = sandbox.dataset(stake=STAKE)
        raw = provider.x * data.scale + data.mean  # the provider holds its rows unstandardized
        frame = pd.DataFrame(raw, columns=features).assign(digit=provider.y)
        service = LightService(
            LightNode(owner, sandbox.escrow, sandbox.staking),
            [LocalData(dataset_id, lambda frame=frame: frame)],
            policy,
            LightState(str(tmp_path / f"light-{provider.name}.db")),
            clock=committee.clock,
        )
        ((_, _, status, reason),) = service.poll()
        assert status == "submitted", reason
        assert reason == f"{provider.size} rows to heavy nodes [1, 2, 3]"
        providers[provider.name] = (owner, "0x" + dataset_id.hex())
        rows[provider.name] = provider.size
        g = projected_gradients(model, theta, provider.x, provider.y, projection)
        plain[provider.name] = float(influence_scores(g, query).sum())
    endpoints = [sandbox.staking.heavy_node(m).endpoint for m in members]
    return ValuationMarket(committee, publication, buyer, job_id, deadline, endpoints,
                           providers, rows, plain)  # fmt: skip


def _close(market: ValuationMarket) -> None:
    """Past the deadline, until the committee has agreed on the participants."""
    clock = market.committee.clock
    clock.advance(market.deadline - clock() + 1)
    limit = time.monotonic() + 60
    url = f"{market.endpoints[0]}/jobs/{market.job_id}/valuation"
    while (response := requests.get(url, timeout=10)).status_code != 200:
        assert response.status_code == 409, response.text
        assert time.monotonic() < limit, "the committee never agreed on the participants"
        time.sleep(0.1)


def _settle(market: ValuationMarket) -> ResultDocument:
    """Past the report window and the peers' grace, until finalized; the result document."""
    market.committee.clock.advance(DECRYPT_WINDOW + 5)
    assert market.committee.wait_for(market.job_id) is JobState.FINALIZED
    raw = requests.get(f"{market.endpoints[0]}/jobs/{market.job_id}/result", timeout=10).content
    return ResultDocument.from_bytes(raw, market.sandbox.escrow.job(market.job_id).result_hash)


def _settled_early(market: ValuationMarket) -> ResultDocument:
    """Without moving the clock: finalized on the report, well inside the report window."""
    assert market.committee.wait_for(market.job_id) is JobState.FINALIZED
    # The nodes' own clock is still where `_close` left it (plus the seconds this took), far
    # from the end of the window they would otherwise have waited for.
    assert market.committee.clock() < market.deadline + DECRYPT_WINDOW
    return _document(market)


def _document(market: ValuationMarket) -> ResultDocument:
    raw = requests.get(f"{market.endpoints[0]}/jobs/{market.job_id}/result", timeout=10).content
    return ResultDocument.from_bytes(raw, market.sandbox.escrow.job(market.job_id).result_hash)


@pytest.fixture
def committee(tmp_path: Path) -> Iterator[Committee]:
    with Chain.embedded() as chain:
        sandbox = Sandbox.deploy(chain)
        specs = JobSpecs(sandbox.escrow)
        c = Committee(sandbox, tmp_path, config_for=specs, valuation_for=specs.valuation)
        c.start(3)
        try:
            yield c
        finally:
            c.stop()


def test_valuation_job_settles_on_the_report_at_once_pays_by_influence_and_slashes(
    tmp_path: Path, committee: Committee
) -> None:
    market = _submitted(tmp_path, committee)
    _close(market)
    report, per_row, failed = report_scores(
        market.buyer, market.publication.buyer, market.job_id, market.endpoints
    )
    assert failed == {}
    # Every member took the report from the buyer: the committee settles on it right away.
    document = _settled_early(market)
    sandbox = market.sandbox
    ids = {name: dataset for name, (_, dataset) in market.providers.items()}

    # The buyer decrypted what the providers computed: totals match plaintext influence.
    for name, dataset in ids.items():
        assert len(per_row[dataset]) == market.rows[name]
        assert report.scores[dataset] == pytest.approx(market.plain[name], rel=1e-5, abs=1e-3)
    valuation = document.result["valuation"]
    assert valuation["rule"] == "influence"
    assert valuation["report"]["report"] == report.to_json()
    # The committee counted the rows scored, under Shamir sharing.
    assert round(document.result["values"][0]) == sum(market.rows.values())

    # Flipped labels score lowest and are slashed within their signed cap (the job's maximum,
    # which their policies accept).
    scores = report.scores
    assert min(scores, key=scores.__getitem__) == ids["flipped"]
    slashes = {d: int(a) for d, a in valuation["slashes"].items()}
    assert ids["flipped"] in slashes
    for dataset, amount in slashes.items():
        assert scores[dataset] < 0
        assert 0 < amount <= STAKE * MAX_SLASH_BPS // 10_000
        assert sandbox.staking.dataset(bytes.fromhex(dataset[2:])).stake == STAKE - amount
    for dataset in set(ids.values()) - set(slashes):
        assert sandbox.staking.dataset(bytes.fromhex(dataset[2:])).stake == STAKE

    # Payouts follow influence: positive scorers paid in score order, the others nothing.
    tree = document.payouts
    assert tree is not None
    positive = sorted((n for n in ids if scores[ids[n]] > 0), key=lambda n: scores[ids[n]])
    assert len(tree) == len(positive) >= 2
    paid = [tree.amount(market.providers[n][0].address) for n in positive]
    assert paid == sorted(paid) and paid[0] < paid[-1]
    assert tree.total == BUDGET - BUDGET * FEE_BPS // 10_000 + sum(slashes.values())

    # Conservation: the buyer gets nothing back (every token of the pool is paid out) but the
    # fee's rounding remainder, claims empty the pool, and the marketplace's books balance.
    sandbox.claim_all(market.job_id, tree)
    for name, amount in zip(positive, paid, strict=True):
        assert sandbox.token.balance_of(market.providers[name][0].address) == amount
    assert sandbox.token.balance_of(market.buyer.address) == 9 * BUDGET + FEE_REMAINDER
    assert sandbox.escrow.job(market.job_id).unclaimed == 0
    sandbox.assert_accounting()


def test_without_a_report_the_pool_is_split_equally_and_nobody_is_slashed(
    tmp_path: Path, committee: Committee
) -> None:
    market = _submitted(tmp_path, committee)
    _close(market)
    document = _settle(market)
    valuation = document.result["valuation"]
    assert valuation["rule"] == "equal" and "no scores" in valuation["reason"]
    tree = document.payouts
    assert tree is not None and len(tree) == 5
    amounts = [tree.amount(owner.address) for owner, _ in market.providers.values()]
    assert max(amounts) - min(amounts) <= 1
    for _, dataset in market.providers.values():
        assert market.sandbox.staking.dataset(bytes.fromhex(dataset[2:])).stake == STAKE
    market.sandbox.assert_accounting()


def _wait_for_reports(market: ValuationMarket, count: int) -> None:
    """Until every member holds `count` reports (members forward what the buyer sent one)."""
    limit = time.monotonic() + 30
    for endpoint in market.endpoints:
        url = f"{endpoint}/jobs/{market.job_id}/valuation"
        while requests.get(url, timeout=10).json()["reports"] < count:
            assert time.monotonic() < limit, f"{endpoint} never received {count} reports"
            time.sleep(0.1)


def _post_scores(market: ValuationMarket, body: dict[str, Any], node: int = 0) -> Any:
    url = f"{market.endpoints[node]}/jobs/{market.job_id}/scores"
    return requests.post(url, json=body, timeout=10)


def test_score_reports_are_checked_and_a_second_report_voids_both(
    tmp_path: Path, committee: Committee
) -> None:
    market = _submitted(tmp_path, committee)
    url = f"{market.endpoints[0]}/jobs/{market.job_id}/valuation"
    early = requests.get(url, timeout=10)
    assert early.status_code == 409 and "wait for its round" in early.json()["detail"]
    _close(market)
    ids = [dataset for _, dataset in market.providers.values()]
    report = {"job": market.job_id, "scores": {d: 1.0 for d in ids}}

    def signed(by: LocalAccount, r: dict[str, Any]) -> dict[str, Any]:
        return {"report": r, "signature": sign_payload(by, r)}

    stranger = market.sandbox.account()
    cases = [
        (signed(stranger, report), 401, "not signed by the job's buyer"),
        (signed(market.buyer, {**report, "scores": {d: 1.0 for d in ids[1:]}}), 400, "missing"),
        (signed(market.buyer, {**report, "scores": {**report["scores"], "0x" + "ab" * 32: 1}}),
         400, "not participants"),
        (signed(market.buyer, {**report, "job": market.job_id + 1}), 400, "not job"),
        (signed(market.buyer, {"job": market.job_id, "scores": {ids[0]: "1"}}), 422, "number"),
        ({"report": report, "signature": "0x" + "00" * 65}, 422, "malformed"),
    ]  # fmt: skip
    for body, status, reason in cases:
        response = _post_scores(market, body)
        assert response.status_code == status, response.text
        assert reason in response.json()["detail"]
    status = requests.get(url, timeout=10).json()
    assert status["reports"] == 0 and status["participants"] == sorted(ids)

    # Two different reports signed by the buyer: neither is trusted, the pool is split equally.
    first = _post_scores(market, signed(market.buyer, report))
    assert first.json() == {"job": market.job_id, "stored": True, "dataset": None,
                            "duplicate": False}  # fmt: skip
    again = _post_scores(market, signed(market.buyer, report), node=0)
    assert again.json()["duplicate"] is True
    other = {**report, "scores": {**report["scores"], ids[0]: -5.0}}
    assert _post_scores(market, signed(market.buyer, other), node=2).status_code == 200
    _wait_for_reports(market, 2)
    document = _settle(market)
    valuation = document.result["valuation"]
    assert valuation["rule"] == "equal" and "2 different score reports" in valuation["reason"]
    assert len(valuation["conflicting"]) == 2

    late = _post_scores(market, signed(market.buyer, report))
    assert late.status_code == 409


def test_a_report_with_no_positive_score_does_not_refund_the_buyer(
    tmp_path: Path, committee: Committee
) -> None:
    market = _submitted(tmp_path, committee)
    _close(market)
    ids = [dataset for _, dataset in market.providers.values()]
    report = {"job": market.job_id, "scores": {d: -1.0 - i for i, d in enumerate(ids)}}
    body = {"report": report, "signature": sign_payload(market.buyer, report)}
    assert _post_scores(market, body).status_code == 200
    _wait_for_reports(market, 1)
    document = _settle(market)
    valuation = document.result["valuation"]
    assert valuation["rule"] == "equal (no positive score)"
    slashes = {d: int(a) for d, a in valuation["slashes"].items()}
    assert set(slashes) == set(ids)  # every dataset reported harmful is slashed (burned)
    tree = document.payouts
    assert tree is not None and tree.total == BUDGET - BUDGET * FEE_BPS // 10_000
    burned_before = market.sandbox.escrow.totals().burned
    market.sandbox.claim_all(market.job_id, tree)
    assert market.sandbox.token.balance_of(market.buyer.address) == 9 * BUDGET + FEE_REMAINDER
    assert market.sandbox.escrow.totals().burned == burned_before
    market.sandbox.assert_accounting()


def _status(market: ValuationMarket, endpoint: str) -> dict[str, Any]:
    return requests.get(f"{endpoint}/jobs/{market.job_id}/valuation", timeout=10).json()


def test_members_settle_early_only_on_one_report_every_agreed_member_took(
    tmp_path: Path, committee: Committee
) -> None:
    market = _submitted(tmp_path, committee)
    _close(market)
    view = market.sandbox.escrow.job(market.job_id)
    endpoint = {i: market.sandbox.staking.heavy_node(m).endpoint
                for i, m in enumerate(view.committee, start=1)}  # fmt: skip
    account = {i: next(a for a in committee.accounts if a.address == m)
               for i, m in enumerate(view.committee, start=1)}  # fmt: skip
    ids = sorted(dataset for _, dataset in market.providers.values())
    first = {"job": market.job_id, "scores": {d: 1.0 for d in ids}}
    second = {**first, "scores": {**first["scores"], ids[0]: -5.0}}

    def post(member: int, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{endpoint[member]}/jobs/{market.job_id}/scores", json=body,
                             timeout=10)  # fmt: skip

    # A member cannot claim to hold a report it does not: its claim carries the report, which
    # must be the buyer's, and its signature must cover the claim itself.
    forged = {"report": first, "signature": sign_payload(account[3], first)}
    claim = {**forged, "peer": 3, "committed": True,
             "peer_signature": sign_payload(account[3], {**forged, "committed": True})}  # fmt: skip
    refused = post(1, claim)
    assert refused.status_code == 401 and "not signed by the job's buyer" in refused.text
    record = {"report": first, "signature": sign_payload(market.buyer, first)}
    upgraded = {
        **record,
        "peer": 3,
        "committed": True,
        "peer_signature": sign_payload(account[3], record),
    }  # a plain forward's signature
    refused = post(1, upgraded)
    assert refused.status_code == 401 and "not signed by that committee member" in refused.text
    assert _status(market, endpoint[1])["taken_by"] == []

    # The buyer sends one report to members 1 and 2 and another to member 3: every member took
    # a report, but not the same one, so nobody settles before the window ends.
    for member, report in ((1, first), (2, first), (3, second)):
        body = {"report": report, "signature": sign_payload(market.buyer, report)}
        assert post(member, body).status_code == 200
    limit = time.monotonic() + 30
    for member in endpoint:
        while (status := _status(market, endpoint[member]))["taken_by"] != [1, 2, 3]:
            assert time.monotonic() < limit, f"member {member} never heard every member's report"
            time.sleep(0.1)
        assert status["agreed"] is None and status["decided"] is False
        assert status["members"] == [1, 2, 3] and status["reports"] == 2
    assert market.sandbox.escrow.job_state(market.job_id) is JobState.POSTED

    # At the window's end, as before: two reports from the buyer void both.
    valuation = _settle(market).result["valuation"]
    assert valuation["rule"] == "equal" and "2 different score reports" in valuation["reason"]
