"""Schema-driven fuzzing of the heavy node's OpenAPI (schemathesis): no input it can be sent,
valid by the schema or not, makes it answer 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from market.chain import Chain
from market.sandbox import Sandbox
from tests.nodes.harness import Committee


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with Chain.embedded() as chain:
        c = Committee(Sandbox.deploy(chain), tmp_path_factory.mktemp("fuzz"))
        c.start(3)
        market = c.market
        c.post(market.account(10_000 * 10**18), min_participants=1)
        try:
            yield c, market.staking.heavy_node(c.accounts[0].address).endpoint
        finally:
            c.stop()


@pytest.fixture(scope="module")
def api(served):
    committee, url = served
    node = committee.nodes[committee.accounts[0].address]
    from nodes.service import create_app

    return schemathesis.openapi.from_dict(create_app(node).openapi())


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_heavy_node_fail(case, served):
    _, url = served
    response = case.call(base_url=url)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
