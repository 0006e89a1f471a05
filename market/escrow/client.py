"""Bounty lifecycle client: post, draw and accept the committee, inspect, finalize, abort, expire,
claim, claim a fee, report equivocation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from market.chain.client import Chain, Receipt, translate
from market.chain.deploy import Deployment
from market.chain.token import TokenClient
from market.escrow.eip712 import Domain
from market.escrow.types import JobParams, JobState, JobView, Result, SlashConsent


@dataclass(frozen=True)
class Totals:
    """Where the marketplace's tokens are: its balance equals escrowed + staked + unclaimed."""

    escrowed: int
    staked: int
    unclaimed: int
    burned: int


class EscrowClient:
    """Typed access to the job side of the `Marketplace` contract."""

    def __init__(self, chain: Chain, deployment: Deployment) -> None:
        self.chain = chain
        self.deployment = deployment
        self.contract = chain.contract("Marketplace", deployment.marketplace)
        self.token = TokenClient(chain, deployment.token)
        self.domain = Domain(chain.chain_id, self.contract.address)

    # ------------------------------------------------------------------ transactions
    def post_job(self, buyer: LocalAccount, params: JobParams, use_permit: bool = True) -> int:
        """Escrows `params.budget` and posts the job; returns its id. With `use_permit`, the
        approval rides along as an EIP-2612 permit in the same transaction."""
        return self.posted_job_id(self.submit_job(buyer, params, use_permit))

    def posted_job_id(self, receipt: Receipt) -> int:
        """The id of the job a `postJob` receipt created."""
        (event,) = receipt.events(self.contract, "JobPosted")
        return int(event["jobId"])

    def submit_job(
        self, buyer: LocalAccount, params: JobParams, use_permit: bool = True
    ) -> Receipt:
        """`post_job`, returning the receipt of the posting transaction."""
        permit = self.token.permit(buyer, self.contract.address, params.budget)
        with_permit = self.contract.functions.postJobWithPermit(
            params.as_abi(), permit.deadline, permit.v, permit.r, permit.s
        )
        if use_permit:
            fn = with_permit
        else:
            # Every check of the posting, before the approval is sent: a post that would fail
            # leaves no allowance behind.
            self.chain.call(with_permit, buyer.address, block="pending")
            self.token.ensure_allowance(buyer, self.contract.address, params.budget)
            fn = self.contract.functions.postJob(params.as_abi())
        return self.chain.transact(buyer, fn)

    def draw_committee(self, sender: LocalAccount, job_id: int) -> Receipt:
        """Draws the job's committee (anyone may, from the block after posting on). A draw whose
        block hash has aged out only moves the draw block: call again then."""
        return self.chain.transact(sender, self.contract.functions.drawCommittee(job_id))

    def accept_job(self, member: LocalAccount, job_id: int) -> Receipt:
        """A drawn member takes the job on (paid for its work, penalized if it lets it expire)."""
        return self.chain.transact(member, self.contract.functions.acceptJob(job_id))

    def claim_fee(self, sender: LocalAccount, job_id: int, signature: bytes) -> Receipt:
        """Pays the signer of `signature` (over the finalized digest) its fee share."""
        return self.chain.transact(sender, self.contract.functions.claimFee(job_id, signature))

    def release_fees(self, sender: LocalAccount, job_id: int) -> Receipt:
        return self.chain.transact(sender, self.contract.functions.releaseFees(job_id))

    def finalize(
        self,
        sender: LocalAccount,
        result: Result,
        signatures: Sequence[bytes],
        consents: Sequence[SlashConsent] = (),
    ) -> Receipt:
        """Settles a job with the committee's signatures (ascending signer order)."""
        fn = self.contract.functions.finalize(
            result.as_abi(), [c.as_abi() for c in consents], list(signatures)
        )
        return self.chain.transact(sender, fn)

    def abort(
        self, sender: LocalAccount, job_id: int, reason: str, signatures: Sequence[bytes]
    ) -> Receipt:
        return self.chain.transact(
            sender, self.contract.functions.abort(job_id, reason, list(signatures))
        )

    def expire(self, sender: LocalAccount, job_id: int) -> Receipt:
        return self.chain.transact(sender, self.contract.functions.expire(job_id))

    def claim(
        self, sender: LocalAccount, job_id: int, account: str, amount: int, proof: Sequence[bytes]
    ) -> Receipt:
        fn = self.contract.functions.claim(
            job_id, to_checksum_address(account), amount, list(proof)
        )
        return self.chain.transact(sender, fn)

    def report_equivocation(
        self, reporter: LocalAccount, a: Result, sig_a: bytes, b: Result, sig_b: bytes
    ) -> Receipt:
        fn = self.contract.functions.reportEquivocation(a.as_abi(), sig_a, b.as_abi(), sig_b)
        return self.chain.transact(reporter, fn)

    def report_abort_equivocation(
        self,
        reporter: LocalAccount,
        result: Result,
        sig_result: bytes,
        reason: str,
        sig_abort: bytes,
    ) -> Receipt:
        fn = self.contract.functions.reportAbortEquivocation(
            result.as_abi(), sig_result, reason, sig_abort
        )
        return self.chain.transact(reporter, fn)

    # ------------------------------------------------------------------ views
    def committee_ready(self, job_id: int) -> bool:
        """Whether light nodes may submit: drawn, a quorum accepted, acceptance over."""
        return bool(self.chain.call(self.contract.functions.committeeReady(job_id)))

    def registry(self) -> tuple[str, ...]:
        """The active heavy nodes committees are drawn from."""
        return tuple(self.chain.call(self.contract.functions.heavyNodeRegistry()))

    def job(self, job_id: int) -> JobView:
        return JobView.from_abi(job_id, self.chain.call(self.contract.functions.getJob(job_id)))

    def job_state(self, job_id: int) -> JobState:
        return JobState(self.chain.call(self.contract.functions.jobState(job_id)))

    def job_count(self) -> int:
        return int(self.chain.call(self.contract.functions.jobCount()))

    def jobs(self, buyer: str | None = None) -> list[JobView]:
        """Every job (of `buyer`, when given), oldest first."""
        views = [self.job(i) for i in range(1, self.job_count() + 1)]
        return [v for v in views if buyer is None or v.buyer == to_checksum_address(buyer)]

    def finalized_event(self, job_id: int) -> dict[str, Any] | None:
        """The `JobFinalized` event of `job_id` (with its result URI), if it was finalized."""
        return self.chain.find_event(
            self.contract, "JobFinalized", self.deployment.block, jobId=job_id
        )

    def aborted_event(self, job_id: int) -> dict[str, Any] | None:
        """The `JobAborted` event of `job_id` (with the committee's reason), if it was aborted."""
        return self.chain.find_event(
            self.contract, "JobAborted", self.deployment.block, jobId=job_id
        )

    def posted_event(self, job_id: int) -> dict[str, Any] | None:
        """The `JobPosted` event of `job_id` (with its full parameters and spec URI)."""
        start = max(self.deployment.block, self.chain.first_block_at(self.job(job_id).posted_at))
        return self.chain.find_event(self.contract, "JobPosted", start, oldest=True, jobId=job_id)

    def block_number(self) -> int:
        """The chain's latest block (nothing about any job changes until it moves)."""
        try:
            return int(self.chain.web3.eth.block_number)
        except Exception as exc:
            raise translate(exc) from None

    def fee_paid(self, job_id: int, node: str) -> bool:
        """Whether `node` was paid its fee share of job `job_id`: a `FeePaid` event, looked for
        only from the job's finalization on (by its `finalize` call or a later `claimFee`)."""
        final = self.finalized_event(job_id)
        if final is None:
            return False
        paid = self.chain.find_event(
            self.contract, "FeePaid", final["blockNumber"], jobId=job_id,
            node=to_checksum_address(node),
        )  # fmt: skip
        return paid is not None

    def fees_paid(self, node: str) -> list[dict[str, Any]]:
        """Every `FeePaid` event to `node`."""
        return self.chain.events(
            self.contract, "FeePaid", self.deployment.block, node=to_checksum_address(node)
        )

    def is_claimed(self, job_id: int, account: str, amount: int) -> bool:
        fn = self.contract.functions.isClaimed(job_id, to_checksum_address(account), amount)
        return bool(self.chain.call(fn))

    def equivocation_reported(self, job_id: int, node: str) -> bool:
        fn = self.contract.functions.equivocationReported(job_id, to_checksum_address(node))
        return bool(self.chain.call(fn))

    def totals(self) -> Totals:
        return Totals(
            escrowed=int(self.chain.call(self.contract.functions.totalEscrowed())),
            staked=int(self.chain.call(self.contract.functions.totalStaked())),
            unclaimed=int(self.chain.call(self.contract.functions.totalUnclaimed())),
            burned=int(self.chain.call(self.contract.functions.totalBurned())),
        )

    def result_digest(self, result: Result) -> bytes:
        """The contract's own digest for `result` (equal to `eip712.result_digest`)."""
        return bytes(self.chain.call(self.contract.functions.resultDigest(result.as_abi())))

    def abort_digest(self, job_id: int, reason: str) -> bytes:
        return bytes(self.chain.call(self.contract.functions.abortDigest(job_id, reason)))

    def participation_digest(self, job_id: int, dataset_id: bytes, max_slash_bps: int) -> bytes:
        fn = self.contract.functions.participationDigest(job_id, dataset_id, max_slash_bps)
        return bytes(self.chain.call(fn))

    def payout_leaf(self, account: str, amount: int) -> bytes:
        fn = self.contract.functions.payoutLeaf(to_checksum_address(account), amount)
        return bytes(self.chain.call(fn))
