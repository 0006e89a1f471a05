"""A market deployed on a local chain, with helpers to populate it: funded accounts, registered
heavy nodes, staked datasets, job parameters, signed results and consents, and the global
accounting check. The demo, the benchmarks and the tests build on it; nothing here is used by
the nodes themselves."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount

from compute.proposal import Proposal
from market.chain import TOKEN, Chain, Deployment, MarketConfig, deploy_market
from market.chain.token import PERMIT_TTL, TokenClient
from market.escrow import EscrowClient, JobParams, JobView, Result, Slash, SlashConsent
from market.escrow.eip712 import abort_digest, participation_digest, result_digest, sign_digest
from market.staking import StakingClient
from market.storage import Storage, open_storage, uri_for
from market.valuation.merkle import PayoutTree

ETHER = 10**18
FAUCET_BATCH = 200
"""Accounts funded per `faucetMany` transaction in `Sandbox.datasets` (about 25,000 gas each, so
about 5 M gas a batch: well within a block on every backend)."""
SETUP_STAKE_GAS = 400_000
"""Gas limit of each stake `Sandbox.datasets` sends, so that it sends without a dry run (the
embedded chain would execute each transaction twice) or an estimate (a round trip): a new
account's `stakeDatasetWithPermit` uses about 143,000."""


@dataclass
class Sandbox:
    chain: Chain
    deployment: Deployment
    deployer: LocalAccount
    escrow: EscrowClient
    staking: StakingClient
    token: TokenClient
    accounts: list[LocalAccount] = field(default_factory=list)

    @classmethod
    def deploy(cls, chain: Chain, config: MarketConfig | None = None) -> Sandbox:
        deployer = Account.create()
        chain.fund(deployer.address, 1_000 * ETHER)
        deployment = deploy_market(chain, deployer, config)
        return cls(
            chain=chain,
            deployment=deployment,
            deployer=deployer,
            escrow=EscrowClient(chain, deployment),
            staking=StakingClient(chain, deployment),
            token=TokenClient(chain, deployment.token),
        )

    @property
    def config(self) -> MarketConfig:
        return self.deployment.config

    @property
    def market(self) -> str:
        return self.deployment.marketplace

    # ------------------------------------------------------------------ participants
    def account(self, tokens: int = 0) -> LocalAccount:
        """A new account with gas money and `tokens` DATA base units from the deployer."""
        account = Account.create()
        self.chain.fund(account.address, 10 * ETHER)
        if tokens:
            self.token.transfer(self.deployer, account.address, tokens)
        self.accounts.append(account)
        return account

    def heavy_nodes(self, count: int, stake: int | None = None) -> list[LocalAccount]:
        """`count` registered heavy nodes, in ascending address order."""
        stake = stake or self.config.min_heavy_node_stake
        nodes = [self.account(stake) for _ in range(count)]
        for i, node in enumerate(nodes):
            self.staking.register_heavy_node(
                node, stake, f"http://127.0.0.1:{9000 + i}", secrets.token_bytes(32)
            )
        return sorted(nodes, key=lambda a: int(a.address, 16))

    def dataset(
        self, owner: LocalAccount | None = None, stake: int | None = None
    ) -> tuple[LocalAccount, bytes]:
        """A staked dataset of `owner` (who must hold the stake), or of a new account
        (`datasets`: two transactions, the faucet's and the stake's)."""
        if owner is None:
            return self.datasets(1, stake)[0]
        stake = stake or self.config.min_dataset_stake
        dataset_id = secrets.token_bytes(32)
        self.staking.stake_dataset(owner, dataset_id, stake, _metadata_uri(dataset_id))
        return owner, dataset_id

    def datasets(
        self, count: int, stake: int | None = None, workers: int = 1
    ) -> list[tuple[LocalAccount, bytes]]:
        """`count` new accounts, each holding gas money and a dataset staked with exactly the
        tokens it was given, in `count + ceil(count / FAUCET_BATCH)` transactions: gas ether
        with `chain.fund` (a devnet power, no transaction of the market's), the tokens minted
        by `faucetMany` in batches (sent by the deployer), and each stake in one
        `stakeDatasetWithPermit` transaction (no approval, sent with `SETUP_STAKE_GAS`). With
        `workers` above 1, that many threads send the stakes, each account only its own: that
        pays on Anvil or an RPC chain (1,000 stakes 2.3 times faster with 8), not on the embedded
        chain, which runs one request at a time."""
        stake = stake or self.config.min_dataset_stake
        limit = self.token.faucet_limit()
        if stake > limit:
            raise ValueError(f"a stake above the faucet's limit ({limit:,}) per account")
        owners = [Account.create() for _ in range(count)]
        ids = [secrets.token_bytes(32) for _ in owners]
        batch = min(FAUCET_BATCH, limit // stake)
        for owner in owners:
            self.chain.fund(owner.address, 10 * ETHER)
        for start in range(0, count, batch):
            chunk = [o.address for o in owners[start : start + batch]]
            self.token.faucet_many(self.deployer, chunk, stake)
        self.accounts.extend(owners)
        # One deadline for all; the accounts are new, so each permit's nonce is 0: no reads.
        deadline = self.chain.clock() + PERMIT_TTL

        def stake_one(owner: LocalAccount, dataset_id: bytes) -> None:
            permit = self.token.sign_permit(owner, self.market, stake, deadline, nonce=0)
            self.staking.stake_dataset_with_permit(
                owner, dataset_id, stake, _metadata_uri(dataset_id), permit, SETUP_STAKE_GAS
            )

        if workers > 1 and count > 1:
            with ThreadPoolExecutor(min(workers, count)) as pool:
                list(pool.map(stake_one, owners, ids))  # re-raises the first failure
        else:
            for owner, dataset_id in zip(owners, ids, strict=True):
                stake_one(owner, dataset_id)
        return list(zip(owners, ids, strict=True))

    # ------------------------------------------------------------------ jobs
    def params(
        self,
        committee: Iterable[LocalAccount] | int,
        budget: int = 1_000 * TOKEN,
        fee_bps: int = 1_000,
        quorum: int | None = None,
        min_participants: int = 1,
        max_slash_bps: int = 2_000,
        window: int = 3_600,
    ) -> JobParams:
        """A job asking for a committee of `committee` members (a count, or the accounts whose
        number it is)."""
        size = committee if isinstance(committee, int) else len(list(committee))
        return JobParams(
            spec_hash=secrets.token_bytes(32),
            spec_uri="ipfs://spec",
            budget=budget,
            fee_bps=fee_bps,
            deadline=self.chain.now() + window,
            min_participants=min_participants,
            committee_size=size,
            quorum=quorum or size // 2 + 1,
            max_slash_bps=max_slash_bps,
        )

    def post(
        self,
        buyer: LocalAccount,
        committee: Iterable[LocalAccount],
        accept: Iterable[LocalAccount] | None = None,
        **options: int,
    ) -> int:
        """Posts a job, draws its committee and has `accept` (default: every drawn member)
        accept it. The registry must hold exactly `committee` (besides the buyer), so that the
        draw gives those members."""
        members = list(committee)
        job_id = self.escrow.post_job(buyer, self.params(members, **options))
        self.draw(job_id)
        drawn = self.escrow.job(job_id).committee
        expected = {m.address for m in members}
        if set(drawn) != expected:
            raise AssertionError(f"drew {drawn}, expected {sorted(expected)}")
        for member in members if accept is None else accept:
            self.escrow.accept_job(member, job_id)
        return job_id

    def wait_ready(self, job_id: int, timeout: float = 30.0) -> JobView:
        """Wait until the job's drawn committee has accepted (running heavy nodes accept it on
        their own); the job as it then stands."""
        return wait_ready(self.escrow, job_id, timeout)

    def post_proposal(
        self, buyer: LocalAccount, proposal: Proposal, storage: Storage | None = None
    ) -> JobView:
        """Publish `proposal` by content address (`ipfs://`, the embedded store by default),
        post it, draw its committee and wait until the running heavy nodes accepted it."""
        from nodes.jobs import job_params

        store = storage if storage is not None else open_storage()
        uri = uri_for(store.put(proposal.canonical_bytes()))
        job_id = self.escrow.post_job(buyer, job_params(proposal, uri))
        self.draw(job_id)
        return self.wait_ready(job_id)

    def draw(self, job_id: int) -> tuple[str, ...]:
        """Draws a job's committee (from the next block on, as the contract requires)."""
        self.escrow.draw_committee(self.deployer, job_id)
        return self.escrow.job(job_id).committee

    def result(
        self,
        job_id: int,
        payouts: Mapping[str, int],
        participants: int | None = None,
        slashes: Iterable[Slash] = (),
        slashed_to_payouts: int = 0,
        funded: int | None = None,
    ) -> tuple[Result, PayoutTree | None]:
        """A result paying `payouts`; `funded` (default: the sum) is the budget-funded part."""
        tree = PayoutTree.build(dict(payouts)) if payouts else None
        total = sum(payouts.values())
        return (
            Result(
                job_id=job_id,
                result_hash=secrets.token_bytes(32),
                result_uri="ipfs://result",
                payout_root=tree.root if tree else bytes(32),
                payout_total=total - slashed_to_payouts if funded is None else funded,
                participants=participants if participants is not None else max(1, len(payouts)),
                slashed_to_payouts=slashed_to_payouts,
                slashes=tuple(slashes),
            ),
            tree,
        )

    def sign(self, signers: Iterable[LocalAccount], result: Result) -> list[bytes]:
        """Signatures of `signers` over `result`, in the ascending order the contract wants."""
        digest = result_digest(self.escrow.domain, result)
        ordered = sorted(signers, key=lambda a: int(a.address, 16))
        return [sign_digest(s, digest) for s in ordered]

    def sign_abort(self, signers: Iterable[LocalAccount], job_id: int, reason: str) -> list[bytes]:
        digest = abort_digest(self.escrow.domain, job_id, reason)
        return [sign_digest(s, digest) for s in sorted(signers, key=lambda a: int(a.address, 16))]

    def consent(
        self, owner: LocalAccount, job_id: int, dataset_id: bytes, bps: int
    ) -> SlashConsent:
        digest = participation_digest(self.escrow.domain, job_id, dataset_id, bps)
        return SlashConsent(bps, sign_digest(owner, digest))

    def claim_all(self, job_id: int, tree: PayoutTree) -> None:
        for account, amount in tree.entries():
            self.escrow.claim(self.deployer, job_id, account, amount, tree.proof(account))

    # ------------------------------------------------------------------ accounting
    def assert_accounting(self) -> None:
        """The marketplace holds exactly escrow + stakes + unclaimed payouts, and every token
        ever minted is in some holder's balance or burned. Both are read in one block: running
        nodes may send transactions (a fee claim) between two reads."""
        for _ in range(50):
            block = self.chain.web3.eth.block_number
            totals = self.escrow.totals()
            held = self.token.balance_of(self.market)
            if self.chain.web3.eth.block_number == block:
                break
        assert held == totals.escrowed + totals.staked + totals.unclaimed, (held, totals)


def _metadata_uri(dataset_id: bytes) -> str:
    return f"ipfs://dataset-{dataset_id.hex()[:8]}"


def wait_ready(escrow: EscrowClient, job_id: int, timeout: float = 30.0) -> JobView:
    """Wait until a job's drawn committee has accepted it (`committeeReady`); the job as it
    then stands. `TimeoutError` names the members that did not."""
    limit = time.monotonic() + timeout
    while not escrow.committee_ready(job_id):
        if time.monotonic() > limit:
            view = escrow.job(job_id)
            raise TimeoutError(
                f"job {job_id}'s committee {view.committee} accepted only "
                f"{view.accepted} within {timeout:.0f} s"
            )
        time.sleep(0.05)
    return escrow.job(job_id)
