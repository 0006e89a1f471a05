"""A valuation (TIP) job from bounty to claims on the embedded chain, through the real light and
heavy nodes over HTTP: the buyer commits to its shares of q in the proposal and posts them to
the committee; providers share their summed gradients and send their rows' scores encrypted
under the buyer's key; the committee opens each provider's total influence and pays by it, with
no report and no decrypt window, and slashes the harmful provider within its cap. The buyer
still decrypts the per-row scores for itself; they match the committee's totals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from eth_account.signers.local import LocalAccount

from compute.economics import payout_pool
from compute.policy import Policy
from compute.products import SharedQuery
from compute.proposal import parse_proposal
from compute.randomness import AesCtrRandom
from market.chain import Chain
from market.escrow import JobState
from market.escrow.documents import ResultDocument
from market.sandbox import TOKEN, Sandbox
from market.storage import open_storage
from market.valuation.tip import SoftmaxRegression, TenSealCKKS, TrainConfig, train
from market.valuation.tip.data import make_market
from market.valuation.tip.influence import Projection, build_query, projected_gradients
from market.valuation.tip.release import Publication, publish
from market.valuation.tip.settle import settle_valuation
from nodes.jobs import JobSpecs
from nodes.late import LateInputError
from nodes.light import LightNode, LightService, LightState, LocalData
from nodes.valuation import committee_terms, fetch_scores, publish_blobs, seal_query, send_query
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
MAX_EXAMPLES = 2_000


@dataclass
class ValuationMarket:
    committee: Committee
    publication: Publication
    shared: SharedQuery
    buyer: LocalAccount
    job_id: int
    deadline: int
    endpoints: list[str]
    keys: list[bytes]
    providers: dict[str, tuple[LocalAccount, str]]
    """quality -> (owner, dataset id)"""
    rows: dict[str, int]
    plain: dict[str, float]
    """quality -> the plaintext influence total, q . G_p"""
    reasons: dict[str, str]
    """quality -> what its light node said it shared"""

    @property
    def sandbox(self) -> Sandbox:
        return self.committee.market


def _posted(
    tmp_path: Path,
    committee: Committee,
    owners: dict[str, LocalAccount] | None = None,
    largest: float | None = None,
):
    """The buyer publishes (CKKS blobs, and its committed query shares) and posts; five
    providers of different quality take part (`owners`: who owns which, by quality;
    `largest`: the largest gradient coordinate the buyer sizes the encoding for)."""
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
    terms, shared = committee_terms(
        publication.q,
        largest or MAX_EXAMPLES * publication.gradient_scale,
        3, 2, AesCtrRandom.from_seed(5),
    )  # fmt: skip
    features = [f"px{i}" for i in range(data.n_features)]
    buyer = sandbox.account(10 * BUDGET)
    deadline = sandbox.chain.now() + 3_600
    proposal = parse_proposal(
        {
            "version": 1,
            "kind": "valuation",
            "title": "How much does your digits data help my classifier?",
            "map": {"function": "summed_gradient", "output": {"fields": []}},
            "reduce": {"op": "sum", "scheme": "shamir", "threshold": 2,
                       "threat_model": "semi-honest"},
            "privacy": {"min_participants": 3},
            "economics": {"budget": BUDGET, "fee_bps": FEE_BPS, "payout_rule": "influence",
                          "max_slash_bps": MAX_SLASH_BPS},
            "deadline": deadline,
            "committee_size": 3,
            "quorum": 2,
            "valuation": {
                "tip": publication.terms.to_json(),
                "features": features,
                "label": "digit",
                **{name: ref.model_dump() for name, ref in refs.items()},
                "committee": terms,
                "max_examples": MAX_EXAMPLES,
            },
        }
    )  # fmt: skip
    job_id = sandbox.post_proposal(buyer, proposal).job_id
    view = sandbox.escrow.job(job_id)
    nodes = [sandbox.staking.heavy_node(m) for m in view.committee]

    policy = Policy(allowed_kinds=frozenset({"valuation"}), max_slash_bps=MAX_SLASH_BPS)
    projection = Projection(SEED, K, model.n_params)
    query = build_query(model, theta, data.train, data.eval, projection, config.weight_decay)
    providers, rows, plain, reasons = {}, {}, {}, {}
    for provider in data.providers:
        owner = (owners or {}).get(provider.name)
        owner, dataset_id = sandbox.dataset(stake=STAKE, owner=owner)
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
        reasons[provider.name] = reason
        providers[provider.name] = (owner, "0x" + dataset_id.hex())
        rows[provider.name] = provider.size
        g = projected_gradients(model, theta, provider.x, provider.y, projection)
        plain[provider.name] = float(g.sum(axis=0) @ query.q)
    return ValuationMarket(
        committee, publication, shared, buyer, job_id, deadline,
        [n.endpoint for n in nodes], [n.encryption_key for n in nodes],
        providers, rows, plain, reasons,
    )  # fmt: skip


def _close_and_settle(market: ValuationMarket) -> ResultDocument:
    """Past the deadline by a second, until finalized; the result document."""
    clock = market.committee.clock
    clock.advance(market.deadline - clock() + 1)
    assert market.committee.wait_for(market.job_id) is JobState.FINALIZED
    # Settled at once: the nodes' clock is still a second past the deadline (plus the
    # seconds this took), with no report and no decrypt window to wait for.
    assert market.committee.clock() < market.deadline + 60
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


def test_a_valuation_job_settles_on_the_committees_totals_pays_by_influence_and_slashes(
    tmp_path: Path, committee: Committee
) -> None:
    market = _posted(tmp_path, committee)
    assert not any("clipped" in r for r in market.reasons.values()), market.reasons
    assert send_query(market.buyer, market.job_id, market.shared, market.keys,
                      market.endpoints) == {}  # fmt: skip
    document = _close_and_settle(market)
    sandbox = market.sandbox
    ids = {name: dataset for name, (_, dataset) in market.providers.items()}

    # The committee's totals are the plaintext influence (within the encoding's precision).
    valuation = document.result["valuation"]
    assert valuation["rule"] == "influence" and valuation["void"] == []
    scores = valuation["scores"]
    for name, dataset in ids.items():
        assert scores[dataset] == pytest.approx(market.plain[name], rel=1e-4, abs=1e-4)
    # The buyer's own view: per-row scores under CKKS, which add up to the same totals.
    per_row = fetch_scores(market.publication.buyer, market.job_id, market.endpoints)
    for name, dataset in ids.items():
        assert len(per_row[dataset]) == market.rows[name]
        assert float(np.sum(per_row[dataset])) == pytest.approx(scores[dataset], rel=1e-3, abs=1e-2)

    # Flipped labels score lowest and are slashed within their signed cap.
    assert min(scores, key=scores.__getitem__) == ids["flipped"]
    slashes = {d: int(a) for d, a in valuation["slashes"].items()}
    assert ids["flipped"] in slashes
    for dataset, amount in slashes.items():
        assert scores[dataset] < 0
        assert 0 < amount <= STAKE * MAX_SLASH_BPS // 10_000
        assert sandbox.staking.dataset(bytes.fromhex(dataset[2:])).stake == STAKE - amount
    for dataset in set(ids.values()) - set(slashes):
        assert sandbox.staking.dataset(bytes.fromhex(dataset[2:])).stake == STAKE

    # Payouts follow influence; conservation: claims empty the pool, the books balance.
    tree = document.payouts
    assert tree is not None
    positive = sorted((n for n in ids if scores[ids[n]] > 0), key=lambda n: scores[ids[n]])
    paid = [tree.amount(market.providers[n][0].address) for n in positive]
    assert len(tree) == len(positive) >= 2 and paid == sorted(paid)
    assert tree.total == payout_pool(BUDGET, FEE_BPS) + sum(slashes.values())
    sandbox.claim_all(market.job_id, tree)
    for name, amount in zip(positive, paid, strict=True):
        assert sandbox.token.balance_of(market.providers[name][0].address) == amount
    assert sandbox.token.balance_of(market.buyer.address) == 9 * BUDGET + FEE_REMAINDER
    assert sandbox.escrow.job(market.job_id).unclaimed == 0
    sandbox.assert_accounting()


def test_a_buyer_controlled_provider_gets_what_its_data_earns_and_no_more(
    tmp_path: Path, committee: Committee
) -> None:
    """The buyer owns the duplicated-data provider (a sybil). No route takes a report any more;
    the payouts are exactly the rule applied to the plaintext influence of every dataset."""
    sybil = committee.market.account(STAKE)
    market = _posted(tmp_path, committee, owners={"duplicated": sybil})
    send_query(market.buyer, market.job_id, market.shared, market.keys, market.endpoints)
    report = {"job": market.job_id, "scores": {d: 1e9 for _, d in market.providers.values()}}
    body = {"report": report, "signature": sign_payload(market.buyer, report)}
    for endpoint in market.endpoints:  # the old report route is gone
        posted = requests.post(f"{endpoint}/jobs/{market.job_id}/scores", json=body, timeout=10)
        assert posted.status_code in (404, 405)
    document = _close_and_settle(market)
    ids = {name: dataset for name, (_, dataset) in market.providers.items()}
    sandbox = market.sandbox
    records = {d: sandbox.staking.dataset(bytes.fromhex(d[2:])) for d in ids.values()}
    expected = settle_valuation(
        {ids[n]: market.plain[n] for n in ids},
        {d: r.owner for d, r in records.items()},
        budget=BUDGET, fee_bps=FEE_BPS, n_accepted=3,
        stakes=dict.fromkeys(ids.values(), STAKE),
        caps_bps=dict.fromkeys(ids.values(), MAX_SLASH_BPS),
        job_max_slash_bps=MAX_SLASH_BPS,
    )  # fmt: skip
    tree = document.payouts
    assert tree is not None
    earned = expected.payouts.get(sybil.address, 0)
    assert tree.amount(sybil.address) == pytest.approx(earned, rel=1e-3)
    for owner, amount in expected.payouts.items():
        assert tree.amount(owner) == pytest.approx(amount, rel=1e-3)


def test_a_share_the_proposal_does_not_commit_to_is_refused(
    tmp_path: Path, committee: Committee
) -> None:
    market = _posted(tmp_path, committee)
    nonces = market.shared.nonces  # each member handed the next member's share
    other = SharedQuery(np.roll(market.shared.shares, 1, axis=0), (nonces[-1], *nonces[:-1]))
    with pytest.raises(LateInputError, match="not the one the proposal commits to"):
        send_query(market.buyer, market.job_id, other, market.keys, market.endpoints)
    # Sealed to the wrong members' keys: no member can open its own share.
    swapped = seal_query(market.job_id, market.shared, market.keys[1:] + market.keys[:1])
    body = {"value": swapped, "signature": sign_payload(market.buyer, swapped)}
    response = requests.post(
        f"{market.endpoints[0]}/jobs/{market.job_id}/late/query", json=body, timeout=10
    )
    assert response.status_code == 422 and "not sealed to its key" in response.text


def test_without_the_query_the_committee_aborts_and_refunds_the_buyer(
    tmp_path: Path, committee: Committee
) -> None:
    market = _posted(tmp_path, committee)
    clock = market.committee.clock
    grace = market.sandbox.deployment.config.settlement_grace
    clock.advance(market.deadline - clock() + grace // 4 + 5)
    limit = time.monotonic() + 60
    while market.sandbox.escrow.job_state(market.job_id) is JobState.POSTED:
        assert time.monotonic() < limit, "the committee never aborted"
        time.sleep(0.1)
    assert market.sandbox.escrow.job_state(market.job_id) is JobState.ABORTED
    assert market.sandbox.token.balance_of(market.buyer.address) == 10 * BUDGET  # refunded
    market.sandbox.assert_accounting()


def test_a_provider_is_told_when_its_gradient_is_clipped_to_the_buyers_bound(
    tmp_path: Path, committee: Committee
) -> None:
    """A buyer that sized the encoding far too small (every coordinate beyond 1 clipped): each
    provider's light node says how much of its contribution was clipped."""
    market = _posted(tmp_path, committee, largest=1.0)
    for name, reason in market.reasons.items():
        assert "clipped to the buyer's encoding bound" in reason, (name, reason)
        assert reason.endswith("to heavy nodes [1, 2, 3]")
