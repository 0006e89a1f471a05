"""A heavy node refuses bad submissions with a clear 4xx and stores nothing for them."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from eth_account import Account

from compute.round import LightNodeRound
from market.chain import Chain
from market.escrow import Result
from market.escrow.documents import ResultDocument
from market.escrow.eip712 import participation_digest, result_digest, sign_digest
from market.sandbox import Sandbox
from nodes.wire import SignedSubmission
from tests.nodes.harness import Committee


@pytest.fixture
def setup(tmp_path):
    with Chain.embedded() as chain:
        c = Committee(Sandbox.deploy(chain), tmp_path)
        c.start(3)
        try:
            market = c.market
            buyer = market.account(10_000 * 10**18)
            job_id = c.post(buyer, min_participants=1)
            yield c, market.escrow.job(job_id)
        finally:
            c.stop()


def _node(c: Committee, index: int):
    return c.market.staking.heavy_node(c.accounts[index - 1].address)


def _body(c, view, owner, dataset_id, recipient=1, share=None, key_of=None, **override):
    config = c.config_for(view)
    if share is None:
        messages = LightNodeRound(config, "0x" + dataset_id.hex()).submit(
            np.array([120.0, 130.0]), np.random.default_rng(0)
        )
        share = messages[recipient - 1].share
    key = _node(c, key_of or recipient).encryption_key
    body = SignedSubmission.create(
        owner, c.market.escrow.domain, view.job_id, dataset_id, recipient, 7, share, key
    ).to_json()
    body.update(override)
    return body


def _post(c, view, body, index=1, job=None):
    url = f"{_node(c, index).endpoint}/jobs/{job or view.job_id}/submissions"
    return requests.post(url, json=body, timeout=10)


def _count(c, view, index=1):
    url = f"{_node(c, index).endpoint}/jobs/{view.job_id}"
    return requests.get(url, timeout=10).json()["submissions"]


def test_every_bad_submission_is_a_4xx_and_nothing_is_stored(setup):
    c, view = setup
    market = c.market
    owner, dataset_id = market.dataset()
    good = _body(c, view, owner, dataset_id)

    stranger = Account.create()
    forged_consent = sign_digest(
        stranger, participation_digest(market.escrow.domain, view.job_id, dataset_id, 0)
    )
    cases = {
        "missing signature": ({k: v for k, v in good.items() if k != "signature"}, 422),
        "missing participation": ({k: v for k, v in good.items() if k != "participation"}, 422),
        "participation by someone else": (
            {**good, "participation": "0x" + forged_consent.hex()},
            401,
        ),  # fmt: skip
        "signed by someone else": (_body(c, view, Account.create(), dataset_id), 401),
        "unstaked dataset": (_body(c, view, owner, bytes(32)), 403),
        "malformed share": (_body(c, view, owner, dataset_id, share=np.zeros(7, np.uint64)), 400),
        "share for another heavy node": (_body(c, view, owner, dataset_id, recipient=2), 400),
        "sealed to another node's key": (_body(c, view, owner, dataset_id, key_of=2), 400),
        "not base64": ({**good, "sealed": "%%%"}, 422),
        "unknown field": ({**good, "extra": 1}, 422),
    }
    for name, (body, status) in cases.items():
        response = _post(c, view, body)
        assert response.status_code == status, (name, response.text)
        assert response.json()["detail"], name
    assert _post(c, view, good, job=view.job_id + 1).status_code == 404  # no such job
    assert _post(c, view, {**good, "job": view.job_id + 1}).status_code == 400  # wrong job
    huge = requests.post(
        f"{_node(c, 1).endpoint}/jobs/{view.job_id}/submissions",
        data=b"{" + b" " * (9 * 1024 * 1024) + b"}",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert huge.status_code == 413
    assert _count(c, view) == 0

    assert _post(c, view, good).status_code == 200
    replayed = _post(c, view, good)  # as a light node resends after a dropped connection
    assert replayed.status_code == 200 and replayed.json()["duplicate"] is True
    again = _body(c, view, owner, dataset_id)  # a fresh submission of the same dataset
    assert _post(c, view, again).status_code == 409
    assert _count(c, view) == 1


def test_peer_messages_must_come_from_the_committee(setup):
    c, view = setup
    url = f"{_node(c, 1).endpoint}/jobs/{view.job_id}/peer"
    from nodes.wire import sign_payload

    payload = {"kind": "agreement", "job": str(view.job_id), "sender": 2, "recipient": 1,
               "datasets": [], "noise_share": None}  # fmt: skip
    forged = requests.post(
        url,
        json={"payload": payload, "signature": sign_payload(Account.create(), payload)},
        timeout=10,
    )
    assert forged.status_code == 401


def test_a_peer_message_the_round_refuses_is_not_stored(setup):
    c, view = setup
    url = f"{_node(c, 1).endpoint}/jobs/{view.job_id}/peer"
    from nodes.wire import encode_vector, sign_payload

    def post(payload):
        body = {"payload": payload, "signature": sign_payload(c.accounts[1], payload)}
        return requests.post(url, json=body, timeout=10)

    short = {"kind": "partial", "job": str(view.job_id), "sender": 2, "recipient": 1,
             "participants": [], "noise_from": [],
             "value": encode_vector(np.zeros(1, dtype=np.uint64))}  # fmt: skip
    refused = post(short)
    assert refused.status_code == 400 and "uint64 vector of length" in refused.text
    statistic = {"kind": "statistic", "job": str(view.job_id), "sender": 2, "recipient": 1,
                 "participants": [],
                 "value": encode_vector(np.zeros(0, dtype=np.uint64))}  # fmt: skip
    refused = post(statistic)
    assert refused.status_code == 400 and "fits no ensemble weights" in refused.text
    # Nothing was kept: the well-formed partial is taken once, then a duplicate.
    length = c.config_for(view).reduction.length
    good = {**short, "value": encode_vector(np.zeros(length, dtype=np.uint64))}
    assert post(good).json()["duplicate"] is False
    assert post(good).json()["duplicate"] is True


def test_a_node_signing_two_results_is_slashed(setup):
    c, view = setup
    market = c.market
    owner, dataset_id = market.dataset()
    config = c.config_for(view)
    c.light(owner).submit(view, config, dataset_id, np.array([120.0, 130.0]))
    c.clock.advance(view.deadline - c.clock() + 1)
    c.wait_for(view.job_id)
    raw = requests.get(f"{_node(c, 1).endpoint}/jobs/{view.job_id}/result", timeout=10).content
    document = ResultDocument.from_bytes(raw)
    tree = document.payouts
    honest = Result(view.job_id, document.hash, f"committee:/jobs/{view.job_id}/result",
                    tree.root, tree.total, 1)  # fmt: skip
    cheat = c.accounts[0]
    other = Result(view.job_id, bytes(32), "elsewhere", tree.root, tree.total, 1)
    domain = market.escrow.domain
    reporter = market.account()
    before = market.staking.heavy_node(cheat.address).stake
    market.escrow.report_equivocation(
        reporter, honest, sign_digest(cheat, result_digest(domain, honest)),
        other, sign_digest(cheat, result_digest(domain, other)),
    )  # fmt: skip
    after = market.staking.heavy_node(cheat.address).stake
    assert after == before - before * market.config.equivocation_slash_bps // 10_000
    assert market.token.balance_of(reporter.address) > 0
