"""Attacks on the nodes by the buyer, through real heavy and light nodes on the embedded chain:
a committee the buyer would like to pick, and jobs posted only to burn the named nodes'
stakes. Each test is named after what it tries."""

from __future__ import annotations

import time

import numpy as np
import pytest

from market.chain import Chain
from market.chain import errors as E
from market.escrow import JobState
from market.sandbox import Sandbox
from tests.nodes.harness import Committee, clinic_data

TOKEN = 10**18


@pytest.fixture
def committee(tmp_path):
    with Chain.embedded() as chain:
        c = Committee(Sandbox.deploy(chain), tmp_path, min_fee=10 * TOKEN)
        c.start(3)
        try:
            yield c
        finally:
            c.stop()


def _looked(committee: Committee) -> None:
    time.sleep(2.5)  # the nodes look at the chain's jobs every second


def test_griefing_jobs_cost_their_poster_not_the_drawn_nodes(committee: Committee):
    """A 1-wei job (a fee share below every node's minimum) is drawn but never accepted: the
    poster pays the gas and gets its wei back after the acceptance window, and no drawn node
    loses anything, however many such jobs are posted."""
    market = committee.market
    griefer = market.account(1_000 * TOKEN)
    gas_before = market.chain.balance(griefer.address)
    jobs = [
        market.post(griefer, committee.accounts, accept=(), budget=1, window=7_200)
        for _ in range(3)
    ]
    _looked(committee)
    for job_id in jobs:
        view = market.escrow.job(job_id)
        assert view.drawn and view.accepted == ()  # every node refused it
        with pytest.raises(E.MarketplaceJobNotExpired):  # the window is still open
            market.escrow.expire(market.deployer, job_id)
    market.chain.increase_time(market.config.accept_window + 1)
    for job_id in jobs:
        market.escrow.expire(market.deployer, job_id)
        assert market.escrow.job_state(job_id) is JobState.EXPIRED
    for node in committee.accounts:
        assert market.staking.heavy_node(node.address).stake == market.config.min_heavy_node_stake
    assert market.chain.balance(griefer.address) < gas_before  # posting cost it gas
    market.assert_accounting()


def test_buyer_cannot_send_providers_to_a_committee_that_has_not_accepted(
    committee: Committee,
):
    """Light nodes send nothing while the drawn committee has not accepted (here: nobody does,
    the job's fee being below the nodes' minimum), so a buyer cannot collect shares at nodes
    of its choosing, nor at drawn nodes that did not take the job on."""
    from compute.policy import Policy
    from nodes.light import LightService, LightState, LocalData

    market = committee.market
    buyer = market.account(1_000 * TOKEN)
    job_id = market.post(buyer, committee.accounts, accept=(), budget=1, min_participants=1)
    _looked(committee)
    owner, dataset_id = market.dataset()
    values = clinic_data(np.random.default_rng(1), 1)[0]
    import pandas as pd

    service = LightService(
        committee.light(owner),
        [LocalData(dataset_id, lambda: pd.DataFrame({"bp": values}))],
        Policy.default().model_copy(update={"min_participants": 1}),
        LightState(str(committee.tmp / "light.db")),
    )
    assert service.poll() == []  # nothing decided, nothing sent
    assert service.staffing == {job_id: market.escrow.job(job_id).accept_by}
    for node in committee.nodes.values():
        assert node.store.submission_count(job_id) == 0


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:5001/api/v0/shutdown#",  # the path the node appends lands in a fragment
        "http://127.0.0.1:5001/api/v0/shutdown?",
        "http://127.0.0.1:5001/admin",
        "http://user:secret@127.0.0.1:5001",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379",
        "http://127.0.0.1:notaport",
    ],
)
def test_a_member_cannot_aim_its_peers_posts_at_another_api(endpoint: str):
    """A heavy node registers any endpoint string on chain; its peers and light nodes post
    only to a plain scheme://host:port, so it cannot steer their POSTs to another service's
    path on their own machine (and no node follows a redirect)."""
    from nodes.wire import WireError, node_endpoint

    with pytest.raises(WireError):
        node_endpoint(endpoint)


def test_a_plain_endpoint_is_kept_without_its_trailing_slash():
    from nodes.wire import node_endpoint

    assert node_endpoint("http://127.0.0.1:9100/") == "http://127.0.0.1:9100"
    assert node_endpoint("https://node.example:443") == "https://node.example:443"
