"""`market demo`: one statistics bounty from posting to claims, on a real chain.

A buyer wants the mean systolic blood pressure across N clinics without any clinic revealing its
records. The demo deploys the market, registers a committee of three heavy nodes and N staked
datasets, posts the bounty with its budget escrowed, runs the aggregation round (each clinic
encodes, clips and Shamir-shares its local sum and count; the committee reconstructs only the
aggregate, 2 of 3 suffice), settles on chain with a quorum of committee signatures over the
EIP-712 result and a Merkle root of equal payouts, lets every clinic claim, and checks that
every token is accounted for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from compute.encoding import FieldSpec
from compute.messages import Result as RoundResult
from compute.messages import RoundConfig
from compute.randomness import Randomness, os_rng
from compute.reduce import Abort, ReduceOp, Reduction
from compute.sharing import scheme_named
from compute.simulation import simulate_round
from market.chain import TOKEN, Chain
from market.escrow import JobState, Result
from market.sandbox import Sandbox
from market.valuation.merkle import PayoutTree
from market.valuation.payouts import equal_split, settlement

FIELD = FieldSpec("systolic_bp", 80.0, 200.0, scale=1 << 16)
"""The bounty's one output field: bounds clip outliers, and give DP its sensitivity."""

BUDGET = 1_000 * TOKEN
FEE_BPS = 1_000


@dataclass
class Phase:
    name: str
    seconds: float


@dataclass
class DemoReport:
    providers: int
    job_id: int
    state: JobState
    secure_mean: float
    plain_mean: float
    records: int
    budget: int
    fee_per_node: dict[str, int]
    earnings: dict[str, int]
    """What each provider claimed, by address."""
    refund: int
    phases: list[Phase] = field(default_factory=list)

    @property
    def error(self) -> float:
        return abs(self.secure_mean - self.plain_mean)


def clinic_records(rng: np.random.Generator, providers: int) -> list[np.ndarray]:
    """Each clinic's local readings: its own size and patient mix, a few out-of-range errors."""
    datasets = []
    for _ in range(providers):
        size = int(rng.integers(20, 400))
        center = rng.normal(128.0, 8.0)
        values = rng.normal(center, 15.0, size)
        values[rng.random(size) < 0.01] = 999.0  # data-entry errors, clipped by the bounds
        datasets.append(values)
    return datasets


@contextmanager
def _phase(phases: list[Phase], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    phases.append(Phase(name, time.perf_counter() - start))


def run_demo(
    chain: Chain,
    providers: int = 50,
    seed: int | None = None,
    rng: Randomness | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> DemoReport:
    """Run the whole job on `chain`; `seed` fixes the clinics' data, `rng` the share randomness
    (the OS CSPRNG by default)."""
    if providers < 3:
        raise ValueError("the demo needs at least 3 providers (the bounty's minimum)")
    phases: list[Phase] = []
    data = clinic_records(np.random.default_rng(seed), providers)

    progress("deploying the market")
    with _phase(phases, "deploy"):
        market = Sandbox.deploy(chain)
        committee = market.heavy_nodes(3)
        buyer = market.account(BUDGET)

    progress(f"staking {providers} datasets")
    with _phase(phases, "stake datasets"):
        owners: dict[str, LocalAccount] = {}
        for _ in range(providers):
            owner, dataset_id = market.dataset()
            owners[dataset_id.hex()] = owner

    progress("posting the bounty")
    min_participants = max(3, providers // 2)
    with _phase(phases, "post bounty"):
        params = market.params(
            committee,
            budget=BUDGET,
            fee_bps=FEE_BPS,
            quorum=2,
            min_participants=min_participants,
        )
        job_id = market.escrow.post_job(buyer, params)

    progress("running the secure reduce")
    with _phase(phases, "secure reduce"):
        config = RoundConfig(
            job_id=str(job_id),
            reduction=Reduction(ReduceOp.MEAN, FIELD),
            scheme=scheme_named("shamir", n=3, threshold=2),
            min_participants=min_participants,
            eligible=frozenset(owners),
        )
        outcomes = simulate_round(config, dict(zip(owners, data, strict=True)), rng or os_rng())
        outcome = _agreed(outcomes)

    progress("settling on chain")
    with _phase(phases, "finalize"):
        pool = BUDGET - BUDGET * FEE_BPS // 10_000
        payees = {owners[d].address: 1 for d in outcome.participants}
        payouts = equal_split(pool, payees)
        tree = PayoutTree.build(payouts)
        summary = json.dumps(
            {"job": job_id, "mean": float(outcome.values[0]), "count": outcome.aggregate.count},
            sort_keys=True,
        ).encode()
        result = Result(
            job_id=job_id,
            result_hash=keccak(summary),
            result_uri="data:application/json," + summary.decode(),
            payout_root=tree.root,
            payout_total=pool,
            participants=len(outcome.participants),
        )
        buyer_before = market.token.balance_of(buyer.address)
        fees_before = {n.address: market.token.balance_of(n.address) for n in committee}
        signers = committee  # every member that reached the result signs; 2 would do
        market.escrow.finalize(signers[0], result, market.sign(signers, result))

    progress("claiming payouts")
    with _phase(phases, "claims"):
        earnings = {}
        by_address = {o.address: o for o in owners.values()}
        for account, amount in tree.entries():
            holder = by_address[account]
            before = market.token.balance_of(account)
            market.escrow.claim(holder, job_id, account, amount, tree.proof(account))
            earnings[account] = market.token.balance_of(account) - before

    market.assert_accounting()
    expected = settlement(BUDGET, FEE_BPS, len(signers), pool, 0, 0)
    refund = market.token.balance_of(buyer.address) - buyer_before
    fees = {n.address: market.token.balance_of(n.address) - fees_before[n.address] for n in signers}
    paid = sum(earnings.values())
    if refund != expected.refund or paid != pool or tuple(fees.values()) != expected.fee_per_signer:
        raise AssertionError("settlement differs from the payout rules")
    clipped = np.concatenate([np.clip(d, FIELD.lo, FIELD.hi) for d in data])
    return DemoReport(
        providers=providers,
        job_id=job_id,
        state=market.escrow.job_state(job_id),
        secure_mean=float(outcome.values[0]),
        plain_mean=float(clipped.mean()),
        records=int(outcome.aggregate.count or 0),
        budget=BUDGET,
        fee_per_node=fees,
        earnings=earnings,
        refund=refund,
        phases=phases,
    )


def _agreed(outcomes: dict[int, RoundResult | Abort]) -> RoundResult:
    """The committee's common result; any abort or disagreement stops the demo."""
    results = [o for o in outcomes.values() if isinstance(o, RoundResult)]
    aborts = [o for o in outcomes.values() if isinstance(o, Abort)]
    if aborts or not results:
        detail = aborts[0].detail if aborts else "no heavy node produced a result"
        raise RuntimeError(f"the round aborted: {detail}")
    first = results[0]
    if any(not np.array_equal(r.aggregate.total, first.aggregate.total) for r in results):
        raise RuntimeError("heavy nodes reconstructed different aggregates")
    return first
