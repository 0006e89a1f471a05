"""A forecast job through the real light and heavy nodes over HTTP on the embedded chain: three
holders (skilled, random, adversarial) share their predictions through their light nodes before
the deadline; the buyer's outcomes are refused before the resolution time, from another
account and malformed, then taken; every member resolves its round with the same outcomes, the
committee scores each holder alone, and the job finalizes with payouts ordered by score and the
adversarial holder slashed within its signed cap; the books balance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from compute.economics import payout_pool
from compute.policy import Policy
from compute.proposal import parse_proposal
from market.chain import Chain
from market.escrow import JobState
from market.escrow.documents import ResultDocument
from market.sandbox import TOKEN
from nodes.client import HeavyClient
from nodes.jobs import JobSpecs
from nodes.late import LateInputError
from nodes.late import post as post_late
from nodes.light import LightNode, LightService, LightState, LocalData
from nodes.wire import sign_payload
from tests.nodes.harness import Committee

BUDGET = 1_000 * TOKEN
FEE_BPS = 500
STAKE = 100 * TOKEN
CAP_BPS = 2_000
TARGETS = 80


@pytest.fixture
def committee(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Committee]:
    monkeypatch.setenv("MARKET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MARKET_IPFS_API", raising=False)
    with Chain.embedded() as chain:
        from market.sandbox import Sandbox

        sandbox = Sandbox.deploy(chain)
        c = Committee(sandbox, tmp_path, config_for=JobSpecs(sandbox.escrow))
        c.start(3)
        try:
            yield c
        finally:
            c.stop()


def _proposal(deadline: int, resolution: int) -> dict:
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
        "forecast": {"targets": TARGETS, "resolution_time": resolution, "payout_factor": 0.2,
                     "cap_bps": CAP_BPS},
    }  # fmt: skip


def test_forecast_job_settles_through_the_nodes(tmp_path: Path, committee: Committee) -> None:
    sandbox = committee.market
    rng = np.random.default_rng(3)
    buyer = sandbox.account(2 * BUDGET)
    deadline = sandbox.chain.now() + 3_600
    resolution = deadline + 600
    proposal = parse_proposal(_proposal(deadline, resolution))
    job_id = sandbox.post_proposal(buyer, proposal).job_id
    endpoints = [sandbox.staking.heavy_node(a.address).endpoint for a in committee.accounts]

    outcomes = rng.normal(size=TARGETS)
    raw = {
        "skilled": outcomes + rng.normal(scale=0.7, size=TARGETS),
        "random": rng.normal(size=TARGETS),
        "adversarial": -outcomes + rng.normal(scale=0.7, size=TARGETS),
    }
    holders = {}
    policy = Policy(allowed_kinds=frozenset({"forecast"}), max_slash_bps=CAP_BPS)
    for name, predictions in raw.items():
        owner, dataset_id = sandbox.dataset(stake=STAKE)
        table = pd.DataFrame({"prediction": predictions})
        service = LightService(
            LightNode(owner, sandbox.escrow, sandbox.staking),
            [LocalData(dataset_id, lambda t=table: t)],
            policy,
            LightState(str(tmp_path / f"light-{name}.db")),
            clock=committee.clock,
        )
        ((_, _, status, reason),) = service.poll()
        assert status == "submitted", reason
        holders[name] = (owner, "0x" + dataset_id.hex())

    value = {"job_id": job_id, "values": [float(v) for v in outcomes]}
    # Past the deadline, before the resolution time: refused by every member, nothing stored.
    committee.clock.advance(deadline - committee.clock() + 1)
    with pytest.raises(LateInputError, match="are taken from .*post them then"):
        post_late(buyer, job_id, "outcomes", value, endpoints)

    committee.clock.advance(resolution - committee.clock() + 1)
    # From another account than the buyer: refused.
    stranger = sandbox.account(0)
    with pytest.raises(LateInputError, match="not signed by job .*'s buyer"):
        post_late(stranger, job_id, "outcomes", value, endpoints)
    client = HeavyClient(endpoints[0])
    # Malformed: one outcome short, or not finite (signed by the buyer all the same).
    for bad, why in (
        ({"job_id": job_id, "values": value["values"][:-1]}, "79 outcomes for the job's 80"),
        ({"job_id": job_id, "values": [float("inf")] * TARGETS}, "values.0"),
        ({"job_id": job_id + 1, "values": value["values"]}, f"not job {job_id}"),
    ):
        signature = "0x" + "00" * 65 if bad["values"][0] == float("inf") else None
        body = {"value": bad, "signature": signature or sign_payload(buyer, bad)}
        response = client.http.post(
            client.endpoint + f"/jobs/{job_id}/late/outcomes",
            data=_json(body),
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 422, response.text
        assert why in response.json()["detail"]
    assert committee.nodes[committee.accounts[0].address].store.late_inputs(job_id) == {}

    # On time, from the buyer: taken; the members agree on it and the job settles.
    assert post_late(buyer, job_id, "outcomes", value, endpoints[:1]) == {}
    assert committee.wait_for(job_id, timeout=60) is JobState.FINALIZED
    raw_doc = requests.get(f"{endpoints[1]}/jobs/{job_id}/result", timeout=10).content
    document = ResultDocument.from_bytes(raw_doc, sandbox.escrow.job(job_id).result_hash)
    forecast = document.result["forecast"]
    scores = {name: forecast["scores"][d] for name, (_, d) in holders.items()}
    assert scores["skilled"] > scores["random"] > scores["adversarial"]
    for name, predictions in raw.items():  # the score under sharing is the correlation
        assert abs(scores[name] - np.corrcoef(predictions, outcomes)[0, 1]) < 2**-10

    tree = document.payouts
    assert tree is not None
    paid = {name: tree.amount(owner.address) if owner.address in tree else 0
            for name, (owner, _) in holders.items()}  # fmt: skip
    assert paid["skilled"] > paid["random"] >= paid["adversarial"] == 0
    assert tree.total <= payout_pool(BUDGET, FEE_BPS)
    adversary = holders["adversarial"][1]
    slashed = int(forecast["slashes"][adversary])
    assert 0 < slashed <= STAKE * CAP_BPS // 10_000
    assert sandbox.staking.dataset(bytes.fromhex(adversary[2:])).stake == STAKE - slashed
    sandbox.claim_all(job_id, tree)
    for name, (owner, _) in holders.items():
        assert sandbox.token.balance_of(owner.address) >= paid[name]
    sandbox.assert_accounting()

    # A node restarted after settling replays the same outcomes (it holds one, resolved).
    member = committee.accounts[2]
    committee.restart(member)
    node = committee.nodes[member.address]
    assert len(node.store.late_inputs(job_id)) == 1


def _json(body: dict) -> str:
    import json

    return json.dumps(body)
