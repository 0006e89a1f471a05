"""From an on-chain job to the proposal the nodes run: fetch the proposal its `specURI` names,
check the bytes against its `specHash`, and check that what the proposal says about money,
time and the committee's size is what the chain holds (the chain wins; a mismatch means the buyer
posted a proposal the job does not honour, and nodes refuse it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eth_utils import keccak

from compute.kinds import ValuationSpec
from compute.messages import RoundConfig
from compute.proposal import Proposal, ProposalError, parse_proposal
from market.escrow import EscrowClient, JobParams, JobView
from market.escrow.documents import DocumentError, fetch
from nodes.errors import NodeError
from nodes.evalset import EnsembleJobError
from nodes.kinds import node_side
from nodes.late import LateTerms, Member
from nodes.valuation import BlobCache, ValuationError


class JobSpecError(NodeError):
    """A job whose proposal cannot be fetched, does not match its hash, or contradicts the
    chain."""


def job_params(proposal: Proposal, spec_uri: str) -> JobParams:
    """What a buyer posts for `proposal` (served at `spec_uri`): the terms the nodes check
    against the proposal in `proposal_for`."""
    return JobParams(
        spec_hash=proposal.content_hash(),
        spec_uri=spec_uri,
        budget=proposal.economics.budget,
        fee_bps=proposal.economics.fee_bps,
        deadline=proposal.deadline,
        min_participants=proposal.privacy.min_participants,
        committee_size=proposal.committee_size,
        quorum=proposal.quorum,
        max_slash_bps=proposal.economics.max_slash_bps,
    )


def _shown(uri: str) -> str:
    return uri if len(uri) <= 120 else uri[:117] + "..."


def posted_params(escrow: EscrowClient, job_id: int) -> dict[str, Any]:
    event = escrow.posted_event(job_id)
    if event is None:
        raise JobSpecError(f"job {job_id} has no JobPosted event")
    return dict(event["params"])


def proposal_for(escrow: EscrowClient, view: JobView, allow: Iterable[str] = ()) -> Proposal:
    """The proposal of a posted job, fetched from its `specURI` and checked against its
    `specHash` and its posted terms. Only content-addressed (`ipfs://`) and `data:` URIs are
    fetched, and the schemes in `allow` (the operator's `--allow-fetch`). A refusal never
    quotes bytes that do not hash to `specHash` (they may be a file or an internal page the
    buyer pointed the node at)."""
    params = posted_params(escrow, view.job_id)
    uri = params["specURI"]
    try:
        raw = fetch(uri, allow=allow)
    except DocumentError as exc:
        raise JobSpecError(f"job {view.job_id}: cannot fetch its proposal: {exc}") from None
    if keccak(raw) != view.spec_hash:
        # The URI may serve non-canonical JSON of the same proposal: compare canonical forms.
        # Whatever else it serves is not described: only that it is not the posted proposal.
        try:
            proposal = parse_proposal(raw)
        except ProposalError:
            proposal = None
        if proposal is None or proposal.content_hash() != view.spec_hash:
            raise JobSpecError(
                f"job {view.job_id}: what {_shown(uri)} serves is not the proposal the job "
                "posted (it does not match specHash); the buyer must publish the proposal "
                "itself, by content address"
            )
    else:
        try:  # the bytes the buyer committed to on chain: its own, safe to describe
            proposal = parse_proposal(raw)
        except ProposalError as exc:
            raise JobSpecError(f"job {view.job_id}: its proposal is invalid: {exc}") from None
    mismatches = [
        name
        for name, chain_value, spec_value in (
            ("budget", view.budget, proposal.economics.budget),
            ("fee_bps", view.fee_bps, proposal.economics.fee_bps),
            ("max_slash_bps", view.max_slash_bps, proposal.economics.max_slash_bps),
            ("deadline", view.deadline, proposal.deadline),
            ("min_participants", view.min_participants, proposal.privacy.min_participants),
            ("committee_size", view.committee_size, proposal.committee_size),
            ("quorum", view.quorum, proposal.quorum),
        )
        if chain_value != spec_value
    ]
    if mismatches:
        raise JobSpecError(
            f"job {view.job_id}: the proposal and the posted job disagree on "
            + ", ".join(mismatches)
        )
    grace = escrow.deployment.config.settlement_grace
    problem = node_side(proposal).check(proposal, grace)
    late_after = proposal.job_kind.late_after(proposal)
    if problem is None and late_after is not None and late_after - proposal.deadline > grace // 2:
        problem = (
            f"its {proposal.job_kind.late_input.after} ({late_after}) must leave the committee "  # type: ignore[union-attr]
            f"half of the {grace} s settlement grace after the deadline to settle"
        )
    if problem is not None:
        raise JobSpecError(f"job {view.job_id}: {problem}")
    return proposal


class JobSpecs:
    """A heavy node's reading of jobs' proposals, each fetched and checked once. Called with a
    job, it is the node's `ConfigFor` (the round configuration); `valuation` gives a valuation
    job's TIP terms (None for other kinds). An ensemble job's evaluation set is fetched and
    checked here too (its validation labels are part of the round's configuration).

    Proposals and blobs are fetched by the URI schemes `blobs` allows: content-addressed
    `ipfs://` and `data:`, plus `allow` (the operator's `--allow-fetch`) for the `BlobCache`
    made here when `blobs` is None. The node calls it only from its own look at the chain,
    never on a request."""

    def __init__(
        self, escrow: EscrowClient, blobs: BlobCache | None = None, allow: Iterable[str] = ()
    ) -> None:
        self.escrow = escrow
        self.blobs = blobs if blobs is not None else BlobCache(allow)
        self._proposals: dict[int, Proposal] = {}

    def proposal(self, view: JobView) -> Proposal:
        if view.job_id not in self._proposals:
            self._proposals[view.job_id] = proposal_for(self.escrow, view, self.blobs.allow)
        return self._proposals[view.job_id]

    def __call__(self, view: JobView) -> RoundConfig:
        proposal = self.proposal(view)
        try:  # e.g. an ensemble's evaluation set: the heavy nodes fit the weights with its labels
            inputs = node_side(proposal).inputs(proposal, self.blobs)
        except (EnsembleJobError, ValuationError) as exc:
            raise JobSpecError(f"job {view.job_id}: {exc}") from None
        return proposal.round_config(str(view.job_id), **inputs)

    def late(self, view: JobView) -> LateTerms | None:
        """The job's late input (`JobKind.late_input`: a forecast's outcomes), None if none."""
        proposal = self.proposal(view)
        spec, after = proposal.job_kind.late_input, proposal.job_kind.late_after(proposal)
        if spec is None or after is None:
            return None

        def config(value: Any, member: Member | None = None) -> RoundConfig:
            side = node_side(proposal)
            inputs = side.inputs(proposal, self.blobs)
            own = side.own_input(proposal, value, member)
            return proposal.round_config(str(view.job_id), **inputs, **{spec.name: own})

        poster = {"buyer": view.buyer}[spec.poster]
        grace = self.escrow.deployment.config.settlement_grace
        decide_by = max(after, view.deadline) + grace // 4
        return LateTerms(spec.name, poster, after, spec.model, config, decide_by)

    def valuation(self, view: JobView) -> ValuationSpec | None:
        """A valuation job's TIP terms (the heavy node's report phase); None for other kinds."""
        return node_side(self.proposal(view)).valuation_terms(self.proposal(view))
