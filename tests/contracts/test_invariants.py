"""Stateful property test: random sequences of stake, post, draw, accept, finalize (with slashes),
claim, fee claims, abort, expire, equivocation reports, top-ups and time against the real
contract, checked after every step against a model. Besides honest parties it runs adversaries:

- a buyer (`buyers[1]`) that registered its own heavy node and two sybil heavy nodes, and stakes
  its own datasets;
- a malicious heavy node (`mallory`) that refuses to sign, signs garbage (another digest, a
  high-s twin), tries to claim its fee twice and reports its own equivocation;
- sybils and mallory sign two results, or a result and an abort, for one job.

Checked:

- tokens are conserved: every holder's balance + burned == supply minted;
- the marketplace holds exactly escrow (budgets of open jobs + held fee shares) + stakes +
  unclaimed payouts;
- every committee is the draw the posting block's hash gives over the pool as it stood then,
  never holds the buyer, and only its accepted members sign, are paid or are penalized;
- no payout leaf and no fee share is paid twice;
- no slash exceeds its cap (stake × min(signed cap, job cap)) of the stake it finds;
- neither the buyer nor a slashed provider gains from a slash: at finalize the buyer receives
  `budget − payoutTotal − feeShare × accepted`, whatever is slashed, and a slashed provider
  nothing;
- an honest heavy node's stake moves only by its own top-ups and by liveness penalties for jobs
  it accepted and that expired unsettled; nothing else (no draw, no job it did not accept, no
  report by an adversary) touches it.

Every action the model predicts to fail must fail with the custom error the model names.

Committees depend on block hashes, which no replay repeats, so every rule draws the same
choices whatever the chain did (indices taken modulo what is there, no preconditions on chain
outcomes): Hypothesis then sees a consistent test, and a printed failing sequence replays the
same actions (possibly with other committees).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from market.chain import TOKEN, Chain
from market.chain import errors as E
from market.chain.errors import ContractRevert
from market.escrow import JobState, Result, Slash
from market.escrow.eip712 import abort_digest, result_digest, sign_digest
from market.staking.rules import dataset_slashable, equivocation_slash
from market.valuation.payouts import slash_cap
from tests.contracts.draw import block_hash, draw, seed_of
from tests.contracts.world import World, fee_split
from tests.signatures import high_s_twin

DAY = 86_400
MARGIN = 5
"""Seconds around a window's edge in which the model does not predict (the next block's
timestamp is a little after `now`)."""
PICK = st.integers(0, 63)
"""An index into whatever there is to pick from (jobs, datasets, members), taken modulo."""
FRACTION = st.integers(0, 10_000)
"""A share, in basis points, of whatever amount a rule needs."""


@dataclass
class DatasetModel:
    owner: LocalAccount
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
    accept_by: int
    size: int
    quorum: int
    pool: list[str]
    eligible: list[bool]
    committee: tuple[str, ...] = ()
    accepted: set[str] = field(default_factory=set)
    state: JobState = JobState.POSTED
    tree: object = None
    unclaimed: int = 0
    result: Result | None = None
    fee_each: int = 0
    fee_paid: set[str] = field(default_factory=set)
    fee_held: int = 0
    reported: set[str] = field(default_factory=set)


def _timestamp(world: World, receipt) -> int:
    return int(world.chain.web3.eth.get_block(receipt.block_number)["timestamp"])


def _ascending(addresses) -> list[str]:
    return sorted(addresses, key=lambda a: int(a, 16))


def _pick(items, index: int):
    items = list(items)
    return items[index % len(items)] if items else None


class MarketMachine(RuleBasedStateMachine):
    chain: Chain | None = None

    @initialize(buyer=st.integers(0, 1), size=st.sampled_from([3, 4]))
    def deploy(self, buyer: int, size: int):
        """The market, its parties, and a first job drawn and accepted by its members (mallory
        excepted), so that settling can start at the first step."""
        self.world, parties = self._fresh_market()
        self.buyers, self.honest, self.mallory, self.sybils, providers = parties
        w, cfg = self.world, self.world.config
        self.stake = cfg.min_heavy_node_stake + 3 * cfg.liveness_penalty
        self.providers = [*providers, self.buyers[1]]
        # The pool in the order nodes joined it (the contract's draw positions).
        self.nodes: dict[str, LocalAccount] = {
            n.address: n for n in [*self.honest, self.mallory, *self.sybils, self.buyers[1]]
        }
        self.node_stakes = {a: self.stake for a in self.nodes}
        self.fees = {a: 0 for a in self.nodes}
        self.pool = list(self.nodes)
        self.honest_topups = {n.address: 0 for n in self.honest}
        self.honest_penalties = {n.address: 0 for n in self.honest}
        self.adversaries = [self.mallory, *self.sybils, self.buyers[1]]
        self.supply = w.token.total_supply()
        self.holders = [w.deployer.address, w.market] + [a.address for a in w.accounts]
        self.model_datasets: dict[bytes, DatasetModel] = {}
        self.model_jobs: dict[int, JobModel] = {}
        self.paid_leaves: set[tuple[int, str]] = set()
        self.steps = 0
        self.post(buyer, 500, 250, 10_000, size, "accept", True)

    @classmethod
    def _fresh_market(cls) -> tuple[World, tuple]:
        """The same market with the same parties for every example: deployed once, and reverted
        to that state (a py-evm snapshot) before each later example. This keeps the examples'
        time in their steps rather than in setting up seven heavy nodes each time."""
        if cls.chain is None:
            cls.chain = chain = Chain.embedded()
            w = World.deploy(chain)
            stake = w.config.min_heavy_node_stake + 3 * w.config.liveness_penalty
            buyers = [w.account(10_000 * TOKEN) for _ in range(2)]
            honest = [w.account(stake + 1_000 * TOKEN) for _ in range(3)]
            mallory = w.account(stake + 1_000 * TOKEN)
            sybils = [w.account(stake + 1_000 * TOKEN) for _ in range(2)]
            providers = [w.account(1_000 * TOKEN) for _ in range(4)]
            for node in [*honest, mallory, *sybils, buyers[1]]:
                w.staking.register_heavy_node(node, stake, "http://node", bytes(32))
            cls.base = (w, (buyers, honest, mallory, sybils, providers))
            cls.snapshot = chain.backend._tester.take_snapshot()
        else:
            cls.chain.backend._tester.revert_to_snapshot(cls.snapshot)
            cls.chain._nonces.clear()  # the nonces it handed out after the snapshot are gone
        return cls.base

    # ------------------------------------------------------------------ helpers
    def expect(self, error: type[ContractRevert] | None, action, label: str = "") -> object:
        # What each rule did, for `--hypothesis-show-statistics`.
        label = label or sys._getframe(1).f_code.co_name
        event(f"{label}: {error.__name__ if error else 'ok'}")
        if error is None:
            return action()
        with pytest.raises(error):
            action()
        return None

    def now(self) -> int:
        return self.world.chain.now()

    def near(self, *edges: int) -> bool:
        """Whether the next block could land on either side of one of `edges`."""
        now = self.now()
        return any(-MARGIN <= now - edge <= MARGIN for edge in edges)

    def active(self, node: str) -> bool:
        return self.node_stakes[node] >= self.world.config.min_heavy_node_stake

    def job(self, pick: int) -> tuple[int, JobModel]:
        job_id = _pick(sorted(self.model_jobs), pick)
        return job_id, self.model_jobs[job_id]

    def node(self, pick: int) -> LocalAccount:
        return self.nodes[_pick(sorted(self.nodes), pick)]

    def settle_closes(self, job: JobModel) -> int:
        return job.deadline + self.world.config.settlement_grace

    def report_closes(self, job: JobModel) -> int:
        return self.settle_closes(job) + self.world.config.report_window

    def settleable(self, job: JobModel) -> type[ContractRevert] | None:
        if job.state is not JobState.POSTED:
            return E.MarketplaceJobNotPosted
        if self.now() > self.settle_closes(job):
            return E.MarketplaceSettlementClosed
        return None

    def signatures(
        self, job: JobModel, digest: bytes, who: list[int], honest: bool, garbage: str
    ) -> tuple[list[bytes], type[ContractRevert] | None]:
        """Signatures over `digest` and what `_checkQuorum` says of them. `honest`: the accepted
        members sign; otherwise the nodes `who` picks (accepted or not, drawn or not). Mallory
        refuses to sign, or signs `garbage`: another digest (which recovers to some unrelated
        address) or a high-s twin (refused outright)."""
        signers = self._signers(job, who, honest, garbage)
        signatures, error = [], None
        if len(signers) < job.quorum:
            error = E.MarketplaceQuorumNotMet
        for signer in _ascending(signers):
            account = self.nodes[signer]
            if account is self.mallory and garbage == "other":
                signatures.append(sign_digest(account, os.urandom(32)))
                error = error or E.MarketplaceSignerNotInCommittee
                continue
            if account is self.mallory and garbage == "high-s":
                signatures.append(high_s_twin(sign_digest(account, digest)))
                error = error or E.MarketplaceInvalidSignature
                continue
            signatures.append(sign_digest(account, digest))
            if signer not in job.committee:
                error = error or E.MarketplaceSignerNotInCommittee
            elif signer not in job.accepted:
                error = error or E.MarketplaceSignerNotAccepted
        return signatures, error

    def penalize(self, node: str, amount: int) -> int:
        taken = min(amount, self.node_stakes[node])
        self.node_stakes[node] -= taken
        return taken

    # ------------------------------------------------------------------ staking
    @rule(owner=st.integers(0, 4), amount=st.integers(10, 300))
    def stake(self, owner: int, amount: int):
        dataset_id, account = os.urandom(32), self.providers[owner]
        stake = lambda: self.world.staking.stake_dataset(account, dataset_id, amount * TOKEN, "m")  # noqa: E731
        enough = self.world.token.balance_of(account.address) >= amount * TOKEN
        if self.expect(None if enough else E.ERC20InsufficientBalance, stake):
            self.model_datasets[dataset_id] = DatasetModel(account, amount * TOKEN)

    @rule(pick=PICK)
    def request_unstake(self, pick: int):
        dataset_id = _pick(self.model_datasets, pick)
        if dataset_id is None:
            return
        d = self.model_datasets[dataset_id]
        error = (
            E.MarketplaceDatasetNotFound
            if d.withdrawn
            else (E.MarketplaceAlreadyUnbonding if d.unstake_at else None)
        )
        receipt = self.expect(
            error, lambda: self.world.staking.request_dataset_unstake(d.owner, dataset_id)
        )
        if receipt is not None:
            d.unstake_at = _timestamp(self.world, receipt)

    @rule(pick=PICK)
    def withdraw(self, pick: int):
        dataset_id = _pick(self.model_datasets, pick)
        if dataset_id is None:
            return
        d = self.model_datasets[dataset_id]
        unbonding = self.world.config.unbonding_period
        if d.withdrawn:
            error = E.MarketplaceDatasetNotFound
        elif not d.unstake_at:
            error = E.MarketplaceNotUnbonding
        elif self.near(d.unstake_at + unbonding):
            return
        elif self.now() < d.unstake_at + unbonding:
            error = E.MarketplaceStillUnbonding
        else:
            error = None
        before = self.world.token.balance_of(d.owner.address)
        if self.expect(error, lambda: self.world.staking.withdraw_dataset(d.owner, dataset_id)):
            assert self.world.token.balance_of(d.owner.address) == before + d.stake
            d.withdrawn = True

    @rule(pick=PICK)
    def top_up(self, pick: int):
        """A heavy node (often one a penalty took out of the pool) adds to its stake."""
        w, node = self.world, self.node(pick)
        amount = w.config.liveness_penalty
        enough = w.token.balance_of(node.address) >= amount
        top_up = lambda: w.staking.top_up_heavy_node(node, amount)  # noqa: E731
        if self.expect(None if enough else E.ERC20InsufficientBalance, top_up):
            self.node_stakes[node.address] += amount
            if node.address in self.honest_topups:
                self.honest_topups[node.address] += amount

    # ------------------------------------------------------------------ jobs
    @rule(
        buyer=st.integers(0, 1),
        budget=st.integers(1, 2_000),
        fee_bps=st.sampled_from([0, 1, 250, 5_000]),
        max_slash=st.sampled_from([0, 500, 10_000]),
        size=st.sampled_from([1, 3, 4]),
        staff=st.sampled_from(["post", "draw", "accept"]),
        permit=st.booleans(),
    )
    def post(self, buyer, budget, fee_bps, max_slash, size, staff, permit):
        """A buyer posts a job; with `staff`, the job is also drawn, and its drawn members
        (mallory excepted: it refuses) accept it."""
        w = self.world
        account = self.buyers[buyer]
        amount = budget * TOKEN + 7
        params = w.params(size, budget=amount, fee_bps=fee_bps, max_slash_bps=max_slash)
        available = sum(self.active(n) for n in self.pool if n != account.address)
        if w.token.balance_of(account.address) < amount:
            error = E.ERC20InsufficientBalance
        elif max_slash and size < 3:
            error = E.MarketplaceCommitteeTooSmallToSlash
        elif available < size:
            error = E.MarketplaceNotEnoughHeavyNodes
        else:
            error = None
        job_id = self.expect(error, lambda: w.escrow.post_job(account, params, use_permit=permit))
        if job_id is None:
            return
        view = w.escrow.job(job_id)
        assert view.committee == () and view.committee_size == size
        self.model_jobs[job_id] = JobModel(
            buyer, amount, fee_bps, max_slash, view.posted_at, params.deadline, view.accept_by,
            size, params.quorum, list(self.pool), [self.active(n) for n in self.pool],
        )  # fmt: skip
        if staff != "post":
            self._draw(job_id)
        if staff == "accept":
            for member in self.model_jobs[job_id].committee:
                if self.nodes[member] is not self.mallory:
                    self._accept(job_id, member)

    @rule(pick=PICK)
    def draw(self, pick: int):
        self._draw(self.job(pick)[0])

    def _draw(self, job_id: int):
        w, job = self.world, self.model_jobs[job_id]
        if job.state is not JobState.POSTED:
            error = E.MarketplaceJobNotPosted
        elif job.committee:
            error = E.MarketplaceCommitteeAlreadyDrawn
        elif self.near(job.accept_by):
            return
        elif self.now() > job.accept_by:
            error = E.MarketplaceAcceptWindowClosed
        else:
            error = None
        if self.expect(error, lambda: w.escrow.draw_committee(self.mallory, job_id), "draw"):
            view = w.escrow.job(job_id)
            buyer = self.buyers[job.buyer].address
            seed = seed_of(block_hash(w, view.draw_block), job_id)
            # The pool as it stood when the job was posted, whatever happened since.
            assert view.committee == draw(seed, job.pool, job.size, buyer, job.eligible)
            assert buyer not in view.committee and len(set(view.committee)) == job.size
            job.committee = view.committee

    @rule(pick=PICK, member=st.booleans(), who=PICK)
    def accept(self, pick: int, member: bool, who: int):
        """A drawn member (or, without `member`, any node, mallory among them) accepts."""
        job_id, job = self.job(pick)
        candidates = job.committee if member and job.committee else sorted(self.nodes)
        self._accept(job_id, _pick(candidates, who))

    def _accept(self, job_id: int, address: str):
        w, job = self.world, self.model_jobs[job_id]
        node = self.nodes[address]
        if job.state is not JobState.POSTED:
            error = E.MarketplaceJobNotPosted
        elif self.near(job.accept_by):
            return
        elif self.now() > job.accept_by:
            error = E.MarketplaceAcceptWindowClosed
        elif node.address not in job.committee:
            error = E.MarketplaceSignerNotInCommittee
        elif node.address in job.accepted:
            error = E.MarketplaceAlreadyAccepted
        else:
            error = None
        if self.expect(error, lambda: w.escrow.accept_job(node, job_id), "accept"):
            job.accepted.add(node.address)

    def staffed(self) -> list[int]:
        """Open jobs that a quorum of honest accepted members could settle."""
        return [
            i
            for i, j in self.model_jobs.items()
            if j.state is JobState.POSTED
            and sum(self.nodes[a] is not self.mallory for a in j.accepted) >= j.quorum
        ]

    SETTLEMENT = dict(
        funded=FRACTION,
        winners=st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True),
        slashed=st.lists(PICK, max_size=3),
        caps=st.lists(st.tuples(st.sampled_from([0, 100, 3_000, 10_000]), st.integers(0, 4)),
                      min_size=3, max_size=3),
        to_payouts=FRACTION,
    )  # fmt: skip
    """What a result says, each as a choice of fixed shape: the funded share of what the budget
    allows, the winning providers, the slashed datasets, for each its signed cap and where its
    amount lies (0, half the cap, the cap, above it, far above it), the share of the slashes
    paid to the winners."""

    @rule(pick=PICK, over=st.sampled_from([0, 0, 1, 2]), who=st.lists(PICK, max_size=5),
          honest=st.booleans(), garbage=st.sampled_from(["refuse", "other", "high-s"]),
          **SETTLEMENT)  # fmt: skip
    def finalize(self, pick, over, who, honest, garbage, **settlement):
        """Anyone submits a result with any signatures and amounts (a little above the budget
        or the slashes with `over`)."""
        job_id, _ = self.job(pick)
        self._finalize(job_id, over, who, honest, garbage, "finalize", **settlement)

    @rule(pick=PICK, extra=st.sampled_from([0, 0, 1, 3]), **SETTLEMENT)
    def settle(self, pick, extra, **settlement):
        """The honest members of a staffed job settle it: a quorum of them and `extra` more
        sign amounts within the budget; accepted members left out claim their fee later."""
        job_id = _pick(self.staffed(), pick)
        if job_id is None:
            return
        job = self.model_jobs[job_id]
        members = _ascending(a for a in job.accepted if self.nodes[a] is not self.mallory)
        count = min(job.quorum + extra, len(members))
        who = [sorted(self.nodes).index(a) for a in members[:count]]
        self._finalize(job_id, 0, who, False, "refuse", "settle", **settlement)

    def _finalize(self, job_id, over, who, honest, garbage, label, funded, winners, slashed,
                  caps, to_payouts):  # fmt: skip
        w, job = self.world, self.model_jobs[job_id]
        if self.near(self.settle_closes(job)):
            return
        fee = job.budget * job.fee_bps // 10_000
        funded = (job.budget - fee) * funded // 10_000 + over
        live = sorted(d for d, m in self.model_datasets.items() if not m.withdrawn)
        chosen = sorted({_pick(live, i) for i in slashed} - {None})
        slashes, consents, signed_caps, applied = [], {}, {}, {}
        for dataset_id, (signed, where) in zip(chosen, caps, strict=False):
            d = self.model_datasets[dataset_id]
            cap = slash_cap(d.stake, signed, job.max_slash_bps)
            amount = [0, cap // 2, cap, cap + 1, 3 * cap + 1][where]
            slashes.append(Slash(dataset_id, amount))
            consents[dataset_id] = w.consent(d.owner, job_id, dataset_id, signed)
            signed_caps[dataset_id], applied[dataset_id] = signed, min(amount, cap)
        signed_total = sum(s.amount for s in slashes)
        to_payouts = sum(applied.values()) * to_payouts // 10_000 + (over and signed_total + 1)
        pool = funded + min(to_payouts, sum(applied.values()))
        shares = {self.providers[i].address: pool // len(winners) for i in winners}
        shares = {a: v for a, v in shares.items() if v > 0}
        result, tree = w.result(
            job_id, shares, slashed_to_payouts=to_payouts, funded=funded, slashes=slashes
        )
        digest = result_digest(w.escrow.domain, result)
        signatures, quorum_error = self.signatures(job, digest, who, honest, garbage)
        signers = _ascending(self._signers(job, who, honest, garbage))

        error = self.settleable(job) or quorum_error
        if error is None and funded > job.budget - fee:
            error = E.MarketplacePayoutAboveBudget
        for s in result.slashes:  # sorted by dataset id, as the contract walks them
            d = self.model_datasets[s.dataset_id]
            if error is None and not dataset_slashable(d.unstake_at, job.posted_at):
                error = E.MarketplaceDatasetNotActive
            if error is None and d.owner.address in job.committee:
                error = E.MarketplaceSlashedOwnerInCommittee
        if error is None and to_payouts > signed_total:
            error = E.MarketplaceSlashedToPayoutsTooHigh

        ordered = [consents[s.dataset_id] for s in result.slashes]
        buyer = self.buyers[job.buyer].address
        owners = {self.model_datasets[s].owner.address for s in applied}
        watched = {buyer, *signers, *owners}
        before = {a: w.token.balance_of(a) for a in watched}
        stakes_before = {s: w.staking.dataset(s).stake for s in applied}
        finalize = lambda: w.escrow.finalize(w.deployer, result, signatures, ordered)  # noqa: E731
        if self.expect(error, finalize, label) is None:
            return

        split = fee_split(job.budget, job.fee_bps, len(job.accepted))
        refund = job.budget - funded - split.each * len(job.accepted)
        gained = {a: w.token.balance_of(a) - before[a] for a in watched}
        # Neither the buyer nor a slashed provider gains from a slash.
        assert gained[buyer] == refund
        for dataset_id, amount in applied.items():
            owner = self.model_datasets[dataset_id].owner.address
            if owner != buyer:
                assert gained[owner] == 0
            # No slash above its cap of the stake it found.
            assert stakes_before[dataset_id] - w.staking.dataset(dataset_id).stake == amount
            assert amount <= slash_cap(stakes_before[dataset_id], signed_caps[dataset_id], 10_000)
            assert amount <= slash_cap(stakes_before[dataset_id], job.max_slash_bps, 10_000)
            self.model_datasets[dataset_id].stake -= amount
        for signer in signers:  # accepted members, each paid its one share
            assert gained[signer] == split.each
            self.fees[signer] += split.each
        job.state, job.tree, job.unclaimed, job.result = JobState.FINALIZED, tree, pool, result
        job.fee_each, job.fee_paid = split.each, set(signers)
        job.fee_held = split.each * (len(job.accepted) - len(signers))
        if any(applied[s.dataset_id] < s.amount for s in result.slashes):
            event(f"{label}: a slash capped")
        if job.fee_held:
            event(f"{label}: fee shares held for members left out")

    def _signers(self, job: JobModel, who, honest: bool, garbage: str) -> set[str]:
        signers = set(job.accepted) if honest else {_pick(sorted(self.nodes), i) for i in who}
        if garbage == "refuse":
            signers.discard(self.mallory.address)
        return signers

    @rule(pick=PICK, provider=st.integers(0, 3))
    def claim(self, pick: int, provider: int):
        w = self.world
        job_id, job = self.job(pick)
        account = self.providers[provider].address
        if job.state is not JobState.FINALIZED or job.tree is None or account not in job.tree:
            error = (
                E.MarketplaceJobNotFinalized
                if job.state is not JobState.FINALIZED
                else E.MarketplaceInvalidProof
            )
            self.expect(error, lambda: w.escrow.claim(w.deployer, job_id, account, 1, []))
            return
        amount, proof = job.tree.amount(account), job.tree.proof(account)
        if (job_id, account) in self.paid_leaves:
            error = E.MarketplaceAlreadyClaimed
        elif amount > job.unclaimed:  # a capped slash left the pool short of the tree
            error = E.MarketplacePayoutPoolExhausted
        else:
            error = None
        if self.expect(error, lambda: w.escrow.claim(w.deployer, job_id, account, amount, proof)):
            self.paid_leaves.add((job_id, account))
            job.unclaimed -= amount

    def owed(self) -> list[tuple[int, str]]:
        return [
            (i, a)
            for i, j in self.model_jobs.items()
            if j.state is JobState.FINALIZED
            for a in _ascending(j.accepted - j.fee_paid)
        ]

    @rule(pick=PICK, twin=st.booleans())
    def collect_fee(self, pick: int, twin: bool):
        """A member left out of a finalize claims its fee share (mallory with a high-s twin)."""
        owed = _pick(self.owed(), pick)
        if owed is not None:
            self._claim_fee(owed[0], self.nodes[owed[1]], twin)

    @rule(pick=PICK, who=PICK, twin=st.booleans())
    def claim_fee(self, pick: int, who: int, twin: bool):
        """Any node claims a fee share of any job: mallory as often as it likes (and with a
        high-s twin of its signature), others that are owed nothing or were paid."""
        self._claim_fee(self.job(pick)[0], self.node(who), twin)

    def _claim_fee(self, job_id: int, node: LocalAccount, twin: bool):
        w, job = self.world, self.model_jobs[job_id]
        twin = twin and node is self.mallory
        if job.state is not JobState.FINALIZED:
            error = E.MarketplaceJobNotFinalized
        elif self.near(self.report_closes(job)):
            return
        elif self.now() > self.report_closes(job):
            error = E.MarketplaceFeeClaimClosed
        elif twin:
            error = E.MarketplaceInvalidSignature
        elif node.address not in job.accepted:
            error = E.MarketplaceSignerNotAccepted
        elif node.address in job.fee_paid:
            error = E.MarketplaceFeeAlreadyPaid
        else:
            error = None
        digest = result_digest(w.escrow.domain, job.result) if job.result else os.urandom(32)
        signature = sign_digest(node, digest)
        signature = high_s_twin(signature) if twin else signature
        before = w.token.balance_of(node.address)
        claim = lambda: w.escrow.claim_fee(w.deployer, job_id, signature)  # noqa: E731
        if self.expect(error, claim, "claim_fee"):
            assert w.token.balance_of(node.address) - before == job.fee_each
            job.fee_paid.add(node.address)
            job.fee_held -= job.fee_each
            self.fees[node.address] += job.fee_each

    @rule(pick=PICK)
    def release_fees(self, pick: int):
        w = self.world
        job_id, job = self.job(pick)
        if job.state is not JobState.FINALIZED:
            error = E.MarketplaceJobNotFinalized
        elif self.near(self.report_closes(job)):
            return
        elif self.now() <= self.report_closes(job):
            error = E.MarketplaceFeeClaimOpen
        elif job.fee_held == 0:
            error = E.MarketplaceZeroAmount
        else:
            error = None
        buyer = self.buyers[job.buyer].address
        before = w.token.balance_of(buyer)
        if self.expect(error, lambda: w.escrow.release_fees(w.deployer, job_id)):
            assert w.token.balance_of(buyer) - before == job.fee_held
            job.fee_held = 0

    @rule(pick=PICK, who=st.lists(PICK, max_size=5), honest=st.booleans(),
          garbage=st.sampled_from(["refuse", "other", "high-s"]))  # fmt: skip
    def abort(self, pick: int, who: list[int], honest: bool, garbage: str):
        w = self.world
        job_id, job = self.job(pick)
        if self.near(self.settle_closes(job)):
            return
        reason = "too few participants"
        digest = abort_digest(w.escrow.domain, job_id, reason)
        signatures, quorum_error = self.signatures(job, digest, who, honest, garbage)
        error = self.settleable(job) or quorum_error
        buyer = self.buyers[job.buyer].address
        before = w.token.balance_of(buyer)
        if self.expect(error, lambda: w.escrow.abort(w.deployer, job_id, reason, signatures)):
            assert w.token.balance_of(buyer) == before + job.budget
            job.state = JobState.ABORTED

    @rule(pick=PICK)
    def expire(self, pick: int):
        w = self.world
        job_id, job = self.job(pick)
        staffed = len(job.accepted) >= job.quorum
        expires_at = self.settle_closes(job) if staffed else job.accept_by
        if job.state is not JobState.POSTED:
            error = E.MarketplaceJobNotPosted
        elif self.near(expires_at):
            return
        elif self.now() <= expires_at:
            error = E.MarketplaceJobNotExpired
        else:
            error = None
        if self.expect(error, lambda: w.escrow.expire(w.deployer, job_id)):
            job.state = JobState.EXPIRED
            for node in job.accepted if staffed else ():
                taken = self.penalize(node, w.config.liveness_penalty)
                if node in self.honest_penalties:
                    self.honest_penalties[node] += taken

    @rule(pick=PICK, cheat=st.integers(0, 3), drawn=st.booleans(),
          reporter=st.sampled_from(["self", "honest"]), with_abort=st.booleans())  # fmt: skip
    def equivocate(self, pick, cheat, drawn, reporter, with_abort):
        """An adversarial node (one drawn for the job, with `drawn`) signs two results, or a
        result and an abort, for a job, and the evidence is reported by itself or by an honest
        node (which earns the reward)."""
        w = self.world
        job_id, job = self.job(pick)
        if self.near(self.report_closes(job)):
            return
        in_committee = [a for a in self.adversaries if a.address in job.committee]
        node = _pick(in_committee if drawn and in_committee else self.adversaries, cheat)
        by = node if reporter == "self" else self.honest[1]
        a, _ = w.result(job_id, {})
        b, _ = w.result(job_id, {})
        sig_a = sign_digest(node, result_digest(w.escrow.domain, a))
        if node.address not in job.committee:
            error = E.MarketplaceSignerNotInCommittee
        elif self.now() > self.report_closes(job):
            error = E.MarketplaceReportWindowClosed
        elif node.address in job.reported:
            error = E.MarketplaceAlreadyReported
        else:
            error = None
        if with_abort:
            sig_b = sign_digest(node, abort_digest(w.escrow.domain, job_id, "x"))
            report = lambda: w.escrow.report_abort_equivocation(by, a, sig_a, "x", sig_b)  # noqa: E731
        else:
            sig_b = sign_digest(node, result_digest(w.escrow.domain, b))
            report = lambda: w.escrow.report_equivocation(by, a, sig_a, b, sig_b)  # noqa: E731
        before = w.token.balance_of(by.address)
        if self.expect(error, report):
            cut = equivocation_slash(
                self.node_stakes[node.address],
                w.config.equivocation_slash_bps,
                w.config.reporter_reward_bps,
            )
            reward = 0 if by is node else cut.reward  # no reward for reporting oneself
            assert w.token.balance_of(by.address) - before == reward
            self.node_stakes[node.address] -= cut.slashed
            job.reported.add(node.address)

    @rule(seconds=st.sampled_from([60, 60, 700, 700, 2 * DAY, 17 * DAY]))
    def advance_time(self, seconds: int):
        """Minutes (within the acceptance window and past it) more often than days (past a
        job's settlement, past its report window)."""
        self.world.chain.increase_time(seconds)

    # ------------------------------------------------------------------ invariants
    # Every read is a call into py-evm (~40 ms): each step checks the totals and the honest
    # nodes, and the end of each example checks every holder and every node as well.
    @invariant()
    def books_balance(self):
        if not hasattr(self, "world"):
            return
        w = self.world
        self.steps += 1
        totals = w.escrow.totals()
        # No token is minted or lost, and the marketplace holds exactly what its books say.
        assert w.token.total_supply() + totals.burned == self.supply
        market = w.token.balance_of(w.market)
        assert market == totals.escrowed + totals.staked + totals.unclaimed
        # Escrow is the open jobs' budgets and the fee shares held for members still to claim.
        jobs = self.model_jobs.values()
        posted = sum(j.budget for j in jobs if j.state is JobState.POSTED)
        assert totals.escrowed == posted + sum(j.fee_held for j in jobs)
        assert totals.unclaimed == sum(j.unclaimed for j in jobs if j.state is JobState.FINALIZED)
        live = sum(d.stake for d in self.model_datasets.values() if not d.withdrawn)
        assert totals.staked == live + sum(self.node_stakes.values())
        # The registry is exactly the active nodes: what the next job is drawn from.
        assert set(w.escrow.registry()) == {n for n in self.pool if self.active(n)}

    @invariant()
    def honest_stakes_pay_only_for_jobs_they_accepted_and_left_unsettled(self):
        """An honest node's stake moves only by its top-ups and the liveness penalties of jobs it
        accepted and that expired unsettled (counted in `expire`, for accepted members only):
        no draw, no job it did not accept, no adversary's report touches it."""
        if not hasattr(self, "world"):
            return
        for node in self.honest:
            a = node.address
            expected = self.stake + self.honest_topups[a] - self.honest_penalties[a]
            assert self.node_stakes[a] == expected
            assert self.world.staking.heavy_node(a).stake == expected

    def teardown(self):
        if not hasattr(self, "world"):
            return
        w = self.world
        event(f"steps: {self.steps // 10 * 10}+")
        # Every token is in a known holder's balance or burned.
        held = sum(w.token.balance_of(a) for a in self.holders)
        assert held + w.escrow.totals().burned == self.supply
        for node, stake in self.node_stakes.items():
            record = w.staking.heavy_node(node)
            assert record.stake == stake
            assert record.fees_earned == self.fees[node]  # no fee share paid twice
        for job_id, account in self.paid_leaves:  # no payout leaf paid twice
            tree = self.model_jobs[job_id].tree
            assert w.escrow.is_claimed(job_id, account, tree.amount(account))


def garbage_error(kind: str) -> type[ContractRevert]:
    """Mallory's garbage: a signature over another digest recovers to some unrelated address;
    a high-s twin is refused outright."""
    return E.MarketplaceInvalidSignature if kind == "high-s" else E.MarketplaceSignerNotInCommittee


MarketMachine.TestCase.settings = settings(
    # 7 examples of 50 steps: about 170 s of CI's 2 cores (10 took 241 s, 20 took 276 s on a
    # quieter machine: past CI's budget); MARKET_STATEFUL_EXAMPLES runs more.
    max_examples=int(os.environ.get("MARKET_STATEFUL_EXAMPLES", 7)),
    stateful_step_count=50,
    deadline=None,
    # Each step is a real transaction: shrinking a failure would take many minutes, so a failure
    # is reported as found (the printed steps replay it).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Minutes of transactions: `make test` runs it, `make test-fast` leaves it out.
TestMarketStateMachine = pytest.mark.slow(MarketMachine.TestCase)
