"""Time as users mean it: an idle chain's latest block is old, and its next block takes the wall
clock. Deadlines and windows are counted from `Chain.clock()`, and a transaction that reverts
because of its block's time is refused before it is sent or, mined, decoded all the same."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from market.chain import Chain
from market.chain import errors as E
from market.sandbox import Sandbox

TOKEN = 10**18
LAG = 3.5
"""Seconds the chain idles so that its latest block lags the wall clock."""


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def fresh(request: pytest.FixtureRequest) -> Iterator[Chain]:
    """A chain of its own whose clock nobody moved ahead of the wall clock (the session's
    chains are, by the tests that skip through unbonding periods)."""
    with Chain.embedded() if request.param == "embedded" else Chain.anvil() as chain:
        yield chain


def _idle(chain: Chain) -> None:
    chain.increase_time(1)  # a fresh block, a second ahead of the wall clock
    time.sleep(LAG)


def test_clock_is_the_later_of_the_wall_clock_and_the_latest_block(fresh: Chain) -> None:
    chain = fresh
    _idle(chain)
    before = int(time.time())
    clock = chain.clock()
    assert clock > chain.now()
    assert before <= clock <= time.time()
    chain.increase_time(3_600)  # a devnet moved ahead of the wall clock
    assert chain.clock() == chain.now() >= time.time() + 3_000


def test_a_deadline_past_by_the_wall_clock_is_refused_before_sending(fresh: Chain) -> None:
    chain = fresh
    sandbox = Sandbox.deploy(chain)
    nodes = sandbox.heavy_nodes(3)
    buyer = sandbox.account(1_000 * TOKEN)
    _idle(chain)
    params = sandbox.params(nodes, budget=100 * TOKEN, window=1)  # latest block + 1 s: past
    sent = chain.web3.eth.get_transaction_count(buyer.address)
    with pytest.raises(E.MarketplaceDeadlineOutOfRange):
        sandbox.escrow.post_job(buyer, params)
    assert chain.web3.eth.get_transaction_count(buyer.address) == sent  # nothing was sent


def test_a_post_that_would_fail_approves_nothing(chain: Chain) -> None:
    """Without a permit, the approval is a transaction of its own: it is sent only after a dry
    run of the posting passed."""
    sandbox = Sandbox.deploy(chain)
    nodes = sandbox.heavy_nodes(3)
    buyer = sandbox.account(1_000 * TOKEN)
    params = sandbox.params(nodes, budget=100 * TOKEN, window=30 * 86_400)  # beyond 7 days
    with pytest.raises(E.MarketplaceDeadlineOutOfRange):
        sandbox.escrow.post_job(buyer, params, use_permit=False)
    assert sandbox.token.allowance(buyer.address, sandbox.market) == 0
    params = sandbox.params(nodes, budget=100 * TOKEN)
    job_id = sandbox.escrow.post_job(buyer, params, use_permit=False)
    assert sandbox.escrow.job(job_id).budget == 100 * TOKEN


@pytest.mark.anvil
def test_a_mined_revert_that_depends_on_the_block_time_is_decoded(anvil_chain: Chain) -> None:
    """Sent without a dry run (a fixed gas limit), mined, reverted: the replay on the state
    before the block would pass (its time is earlier), so the node's trace names the error."""
    chain = anvil_chain  # ahead of the wall clock or not: the revert needs only the idle second
    sandbox = Sandbox.deploy(chain)
    nodes = sandbox.heavy_nodes(3)
    buyer = sandbox.account(1_000 * TOKEN)
    sandbox.token.ensure_allowance(buyer, sandbox.market, 100 * TOKEN)
    _idle(chain)
    params = sandbox.params(nodes, budget=100 * TOKEN, window=1)
    post = sandbox.escrow.contract.functions.postJob(params.as_abi())
    with pytest.raises(E.MarketplaceDeadlineOutOfRange) as raised:
        chain.transact(buyer, post, gas=400_000)
    assert raised.value.args  # decoded: deadline, earliest, latest
