"""Stateful property test: random sequences of stake, post, finalize (with slashes), claim, abort,
expire, unstake and withdraw against the real contract, checked after every step against a model:

- tokens are conserved: every holder's balance + burned == supply minted;
- the marketplace holds exactly escrow + stakes + unclaimed payouts;
- no payout leaf is paid twice;
- no slash exceeds its cap (stake × min(signed cap, job cap));
- no buyer gains from a slash: the refund is `budget − fee − payoutTotal`, whatever is slashed.

Every action the model predicts to fail must fail with the custom error the model names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from market.chain import TOKEN, Chain
from market.chain import errors as E
from market.chain.errors import ContractRevert
from market.escrow import JobState, Slash
from market.staking.rules import dataset_slashable, liveness_penalty, slash_cap
from market.valuation.payouts import settlement
from tests.contracts.world import World

DAY = 86_400


@dataclass
class DatasetModel:
    owner: int
    stake: int
    unstake_at: int = 0
    withdrawn: bool = False


@dataclass
class JobModel:
    buyer: int
    budget: int
    fee_bps: int
    max_slash_bps: int
    posted_at: int
    deadline: int
    state: JobState = JobState.POSTED
    tree: object = None
    unclaimed: int = 0
    claimed: set[str] = field(default_factory=set)


def _timestamp(world: World, receipt) -> int:
    return int(world.chain.web3.eth.get_block(receipt.block_number)["timestamp"])


class MarketMachine(RuleBasedStateMachine):
    chain: Chain | None = None
    datasets = Bundle("datasets")
    jobs = Bundle("jobs")

    @initialize()
    def deploy(self) -> None:
        if MarketMachine.chain is None:
            MarketMachine.chain = Chain.embedded()
        self.world = w = World.deploy(MarketMachine.chain)
        self.committee = w.heavy_nodes(3)
        self.heavy_stakes = {n.address: w.config.min_heavy_node_stake for n in self.committee}
        self.buyers = [w.account(10_000 * TOKEN) for _ in range(2)]
        self.providers = [w.account(1_000 * TOKEN) for _ in range(4)]
        self.supply = w.token.total_supply()
        self.holders = [w.deployer.address, w.market] + [a.address for a in w.accounts]
        self.model_datasets: dict[bytes, DatasetModel] = {}
        self.model_jobs: dict[int, JobModel] = {}
        self.paid_leaves: set[tuple[int, str]] = set()

    def expect(self, error: type[ContractRevert] | None, action) -> object:
        if error is None:
            return action()
        with pytest.raises(error):
            action()
        return None

    # ------------------------------------------------------------------ staking
    @rule(target=datasets, owner=st.integers(0, 3), amount=st.integers(10, 300))
    def stake(self, owner: int, amount: int):
        dataset_id, account = os.urandom(32), self.providers[owner]
        stake = lambda: self.world.staking.stake_dataset(account, dataset_id, amount * TOKEN, "m")  # noqa: E731
        if self.world.token.balance_of(account.address) < amount * TOKEN:
            self.expect(E.ERC20InsufficientBalance, stake)
            return multiple()
        assert stake().gas_used > 0
        self.model_datasets[dataset_id] = DatasetModel(owner, amount * TOKEN)
        return dataset_id

    @rule(dataset_id=datasets)
    def request_unstake(self, dataset_id: bytes):
        d = self.model_datasets[dataset_id]
        owner = self.providers[d.owner]
        error = (
            E.MarketplaceDatasetNotFound
            if d.withdrawn
            else (E.MarketplaceAlreadyUnbonding if d.unstake_at else None)
        )
        receipt = self.expect(
            error, lambda: self.world.staking.request_dataset_unstake(owner, dataset_id)
        )
        if receipt is not None:
            d.unstake_at = _timestamp(self.world, receipt)

    @rule(dataset_id=datasets)
    def withdraw(self, dataset_id: bytes):
        d = self.model_datasets[dataset_id]
        owner = self.providers[d.owner]
        unbonding = self.world.config.unbonding_period
        if d.withdrawn:
            error = E.MarketplaceDatasetNotFound
        elif not d.unstake_at:
            error = E.MarketplaceNotUnbonding
        elif self.world.chain.now() < d.unstake_at + unbonding:
            error = E.MarketplaceStillUnbonding
        else:
            error = None
        before = self.world.token.balance_of(owner.address)
        if self.expect(error, lambda: self.world.staking.withdraw_dataset(owner, dataset_id)):
            assert self.world.token.balance_of(owner.address) == before + d.stake
            d.withdrawn = True

    # ------------------------------------------------------------------ jobs
    @rule(
        target=jobs,
        buyer=st.integers(0, 1),
        budget=st.integers(1, 2_000),
        fee_bps=st.sampled_from([0, 1, 250, 5_000]),
        max_slash=st.sampled_from([0, 500, 10_000]),
    )
    def post(self, buyer: int, budget: int, fee_bps: int, max_slash: int):
        w = self.world
        account = self.buyers[buyer]
        amount = budget * TOKEN + 7
        if w.token.balance_of(account.address) < amount:
            return multiple()
        params = w.params(self.committee, budget=amount, fee_bps=fee_bps, max_slash_bps=max_slash)
        # An expired job's liveness penalty can leave committee members below the minimum stake.
        if any(s < w.config.min_heavy_node_stake for s in self.heavy_stakes.values()):
            self.expect(E.MarketplaceHeavyNodeNotActive, lambda: w.escrow.post_job(account, params))
            return multiple()
        job_id = w.escrow.post_job(account, params, use_permit=bool(budget % 2))
        posted_at = w.escrow.job(job_id).posted_at
        self.model_jobs[job_id] = JobModel(
            buyer, amount, fee_bps, max_slash, posted_at, params.deadline
        )
        return job_id

    def _settleable(self, job: JobModel) -> type[ContractRevert] | None:
        if job.state is not JobState.POSTED:
            return E.MarketplaceJobNotPosted
        if self.world.chain.now() > job.deadline + self.world.config.settlement_grace:
            return E.MarketplaceSettlementClosed
        return None

    @rule(job_id=jobs, data=st.data())
    def finalize(self, job_id: int, data):
        w, job = self.world, self.model_jobs[job_id]
        fee = job.budget * job.fee_bps // 10_000
        funded = data.draw(st.integers(0, job.budget - fee + 2), label="funded")
        winners = data.draw(
            st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True), label="winners"
        )
        # Slashes: some datasets, each with a signed cap and an amount possibly above the cap.
        candidates = [d for d, m in self.model_datasets.items() if not m.withdrawn]
        chosen = (
            data.draw(
                st.lists(st.sampled_from(candidates), unique=True, max_size=3), label="slashed"
            )
            if candidates
            else []
        )
        slashes, consents, error = [], {}, self._settleable(job)
        total_slashed = 0
        for dataset_id in chosen:
            d = self.model_datasets[dataset_id]
            signed = data.draw(st.sampled_from([0, 100, 3_000, 10_000]), label="signed")
            cap = slash_cap(d.stake, signed, job.max_slash_bps)
            amount = data.draw(st.sampled_from([0, cap // 2, cap, cap + 1]), label="amount")
            slashes.append(Slash(dataset_id, amount))
            consents[dataset_id] = w.consent(self.providers[d.owner], job_id, dataset_id, signed)
            if error is None and not dataset_slashable(d.unstake_at, job.posted_at):
                error = E.MarketplaceDatasetNotActive
            if error is None and amount > cap:
                error = E.MarketplaceSlashAboveCap
            total_slashed += amount
        if error is None and funded > job.budget - fee:
            error = E.MarketplacePayoutAboveBudget
        to_payouts = (
            data.draw(st.integers(0, total_slashed), label="to_payouts") if total_slashed else 0
        )
        pool = funded + to_payouts
        shares = {self.providers[i].address: pool // len(winners) for i in winners}
        shares = {a: v for a, v in shares.items() if v > 0}
        result, tree = w.result(
            job_id, shares, slashed_to_payouts=to_payouts, funded=funded, slashes=slashes
        )
        ordered = [consents[s.dataset_id] for s in result.slashes]
        buyer = self.buyers[job.buyer].address
        before = w.token.balance_of(buyer)
        stakes_before = {
            s.dataset_id: w.staking.dataset(s.dataset_id).stake for s in result.slashes
        }
        done = self.expect(
            error,
            lambda: w.escrow.finalize(
                self.committee[0], result, w.sign(self.committee[:2], result), ordered
            ),
        )
        if done is None:
            return
        # No buyer gains from a slash: the refund is fixed by budget, fee and funded payouts.
        expected = settlement(job.budget, job.fee_bps, 2, funded, total_slashed, to_payouts)
        assert w.token.balance_of(buyer) - before == expected.refund
        for s in result.slashes:
            d = self.model_datasets[s.dataset_id]
            assert stakes_before[s.dataset_id] - w.staking.dataset(s.dataset_id).stake == s.amount
            d.stake -= s.amount
        job.state, job.tree, job.unclaimed = JobState.FINALIZED, tree, funded + to_payouts

    @rule(job_id=jobs, pick=st.integers(0, 3))
    def claim(self, job_id: int, pick: int):
        w, job = self.world, self.model_jobs[job_id]
        account = self.providers[pick].address
        if job.state is not JobState.FINALIZED or job.tree is None or account not in job.tree:
            error = (
                E.MarketplaceJobNotFinalized
                if job.state is not JobState.FINALIZED
                else E.MarketplaceInvalidProof
            )
            self.expect(error, lambda: w.escrow.claim(w.deployer, job_id, account, 1, []))
            return
        amount, proof = job.tree.amount(account), job.tree.proof(account)
        error = E.MarketplaceAlreadyClaimed if (job_id, account) in self.paid_leaves else None
        if self.expect(error, lambda: w.escrow.claim(w.deployer, job_id, account, amount, proof)):
            self.paid_leaves.add((job_id, account))
            job.unclaimed -= amount

    @rule(job_id=jobs)
    def abort(self, job_id: int):
        w, job = self.world, self.model_jobs[job_id]
        reason = "too few participants"
        buyer = self.buyers[job.buyer].address
        before = w.token.balance_of(buyer)
        sigs = w.sign_abort(self.committee[1:], job_id, reason)
        if self.expect(
            self._settleable(job), lambda: w.escrow.abort(self.committee[1], job_id, reason, sigs)
        ):
            assert w.token.balance_of(buyer) == before + job.budget
            job.state = JobState.ABORTED

    @rule(job_id=jobs)
    def expire(self, job_id: int):
        w, job = self.world, self.model_jobs[job_id]
        if job.state is not JobState.POSTED:
            error = E.MarketplaceJobNotPosted
        elif w.chain.now() <= job.deadline + w.config.settlement_grace:
            error = E.MarketplaceJobNotExpired
        else:
            error = None
        if self.expect(error, lambda: w.escrow.expire(w.deployer, job_id)):
            job.state = JobState.EXPIRED
            for node, stake in self.heavy_stakes.items():
                self.heavy_stakes[node] = stake - liveness_penalty(stake, w.config.liveness_penalty)

    @rule(seconds=st.sampled_from([60, 2 * DAY, 17 * DAY]))
    def advance_time(self, seconds: int):
        self.world.chain.increase_time(seconds)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def tokens_are_conserved(self):
        if not hasattr(self, "world"):
            return
        w = self.world
        held = sum(w.token.balance_of(a) for a in self.holders)
        assert held + w.escrow.totals().burned == self.supply
        assert w.token.total_supply() + w.escrow.totals().burned == self.supply
        w.assert_accounting()

    @invariant()
    def escrow_and_pools_match_the_model(self):
        if not hasattr(self, "world"):
            return
        totals = self.world.escrow.totals()
        posted = sum(j.budget for j in self.model_jobs.values() if j.state is JobState.POSTED)
        assert totals.escrowed == posted
        unclaimed = sum(
            j.unclaimed for j in self.model_jobs.values() if j.state is JobState.FINALIZED
        )
        assert totals.unclaimed == unclaimed
        live = sum(d.stake for d in self.model_datasets.values() if not d.withdrawn)
        for node, stake in self.heavy_stakes.items():
            assert self.world.staking.heavy_node(node).stake == stake
        assert totals.staked == live + sum(self.heavy_stakes.values())

    @precondition(lambda self: hasattr(self, "world") and self.paid_leaves)
    @invariant()
    def paid_leaves_are_marked(self):
        for job_id, account in self.paid_leaves:
            tree = self.model_jobs[job_id].tree
            assert self.world.escrow.is_claimed(job_id, account, tree.amount(account))


_CI = os.environ.get("CI") == "true"
MarketMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("MARKET_STATEFUL_EXAMPLES", 20 if _CI else 10)),
    stateful_step_count=20,
    deadline=None,
    # Each step is a real transaction: shrinking a failure would take many minutes, so a failure
    # is reported as found (the printed steps replay it).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestMarketStateMachine = MarketMachine.TestCase
