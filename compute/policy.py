"""A provider's privacy policy: declarative rules a light node checks every proposal against.

A `Policy` is data (loaded from a JSON or TOML document with `Policy.model_validate`, or
`parse_policy` for a one-line error); `evaluate(policy, proposal, buyer, committee)` applies
every rule and returns a `Decision`. With `committee` (the members the contract drew and that
accepted the job) the committee rules apply too; a light node submits only once they pass.
Every rule that fails adds its own sentence to `reasons`, so a provider sees all that is wrong
at once; the verdict is `accept` only when none fails, and `manual` (the
node queues the job for `market node approve`) when none fails but the policy asks for manual
approval.

| rule | refuses when |
|---|---|
| `allowed_kinds` | the proposal's kind is not listed |
| `allowed_functions` | its map function is not listed (names must be vetted functions) |
| `min_participants` | it would release an aggregate over fewer datasets than this |
| `allowed_buyers` | a list is given and the buyer (checksummed) is not on it |
| `require_dp` | DP is required and the proposal has none |
| `max_epsilon` | the proposal's epsilon is larger, or it has no DP (epsilon unbounded) |
| `max_columns` | the map touches more columns than this, the filter column included |
| `min_budget_per_participant` | the contract's pool `(budget - fee) // min_participants` is less |
| `max_slash_bps` | the proposal may slash more of a stake than this |
| `min_committee_size` | fewer heavy nodes would hold shares (of the size, or that accepted) |
| `allowed_operators` | a list is given and a committee member is not on it |
| `denied_operators` | a committee member is on this list |
| `budget` | (light node) its (epsilon, delta) exceeds what a dataset, or its buyer, has left |

`budget` (`compute.budget.BudgetSpec`): `{"epsilon": 10, "delta": 1e-6, "per_buyer":
{"epsilon": 2, "delta": 1e-7}, "window_s": 2592000, "composition": "zcdp"}`, every key but
`epsilon` optional. It is the one rule `evaluate` does not apply: it needs the dataset's ledger,
which the light node keeps (`nodes.light.LightState`). `dataset_budgets` sets other totals
for particular datasets, by id (`0x…`) or registered name: `{"dataset_budgets": {"clinic-a":
{"epsilon": 2}}}`; the other datasets have `budget`.

`min_budget_per_participant` uses the proposal's minimum number of participants, i.e. the most a
participant can be paid under an equal split; more participants each get less.

Pure: no file is read here; the caller loads the document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from compute.addresses import Address, checksum_address
from compute.budget import BudgetSpec
from compute.economics import BPS, payout_pool
from compute.errors import ComputeError
from compute.kinds import Kind
from compute.maps import MAP_FUNCTIONS, columns_touched
from compute.problems import describe
from compute.proposal import Proposal

Verdict = Literal["accept", "refuse", "manual"]

StrictCount = Annotated[int, Field(strict=True, ge=1)]


class PolicyError(ComputeError, ValueError):
    """A policy document that does not validate; `str(error)` names every offending field."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))


class Policy(BaseModel):
    """A provider's rules for the proposals its datasets take part in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_kinds: frozenset[Kind] = frozenset({"aggregate"})
    """Proposal kinds accepted."""
    allowed_functions: frozenset[str] = frozenset(MAP_FUNCTIONS)
    """Map functions accepted (by default every vetted one)."""
    min_participants: StrictCount = 3
    """The proposal's `privacy.min_participants` must be at least this."""
    allowed_buyers: frozenset[Address] | None = None
    """Buyer addresses accepted; `None` accepts any buyer."""
    require_dp: StrictBool = False
    """Refuse proposals without differential privacy."""
    max_epsilon: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] | None = None
    """Largest epsilon accepted; when set, a proposal without DP is refused too."""
    max_columns: StrictCount | None = None
    """Most columns the map may touch (value columns and the filter column)."""
    min_budget_per_participant: Annotated[int, Field(strict=True, ge=0)] | None = None
    """Least `payout_pool(budget, fee_bps) // min_participants`, in token base units."""
    max_slash_bps: Annotated[int, Field(strict=True, ge=0, le=BPS)] = 0
    """Refuse proposals whose `economics.max_slash_bps` exceeds this."""
    manual_approval: StrictBool = False
    """Hold every proposal that passes the rules for the operator's approval."""
    min_committee_size: Annotated[int, Field(strict=True, ge=1, le=16)] = 2
    """Fewest heavy nodes that must hold shares (the proposal's size, and those that accepted):
    with fewer, too few members stand between a provider's output and any one of them."""
    allowed_operators: frozenset[Address] | None = None
    """Heavy-node operators this provider shares with; `None` accepts any drawn member."""
    denied_operators: frozenset[Address] = frozenset()
    """Heavy-node operators this provider never shares with."""
    budget: BudgetSpec | None = None
    dataset_budgets: dict[str, BudgetSpec] = {}
    """Budgets for particular datasets, keyed by dataset id (`0x…`) or registered name; every
    other dataset has `budget`."""
    """Each dataset's differential-privacy budget (total, per buyer, window, composition
    rule), enforced by the light node's ledger; `None`: unlimited (a job without DP spends
    nothing recorded). With a budget, a job without DP is refused: its epsilon is unbounded."""

    @field_validator("allowed_functions")
    @classmethod
    def _vetted(cls, functions: frozenset[str]) -> frozenset[str]:
        unknown = sorted(functions - set(MAP_FUNCTIONS))
        if unknown:
            raise ValueError(
                f"unknown map function{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(f) for f in unknown)} (vetted: {_listing(set(MAP_FUNCTIONS))})"
            )
        return functions

    @field_validator("dataset_budgets")
    @classmethod
    def _ids_in_lower_case(cls, value: dict[str, BudgetSpec]) -> dict[str, BudgetSpec]:
        return {k.lower() if k.startswith(("0x", "0X")) else k: v for k, v in value.items()}

    def budget_for(self, dataset: str, name: str = "") -> BudgetSpec | None:
        """The budget of the dataset with id `dataset` (`0x…`) and registered `name`."""
        found = self.dataset_budgets.get(dataset.lower()) or self.dataset_budgets.get(name)
        return found or self.budget

    @classmethod
    def default(cls) -> Policy:
        """Aggregates only, every vetted function, at least 3 participants, any buyer, DP not
        required, no slashing, no manual approval."""
        return cls()


def parse_policy(raw: str | bytes | Mapping[str, Any]) -> Policy:
    """A `Policy` from JSON or a decoded (JSON or TOML) document; `PolicyError` otherwise."""
    try:
        if isinstance(raw, str | bytes):
            return Policy.model_validate_json(raw)
        return Policy.model_validate(raw)
    except ValidationError as error:
        raise PolicyError(describe(error, Policy)) from None


@dataclass(frozen=True)
class Decision:
    """A policy's verdict on one proposal, with a sentence for every rule that failed (or, for
    `manual`, why it waits)."""

    verdict: Verdict
    reasons: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.verdict == "accept"


def _listing(names: frozenset[str] | set[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def evaluate(
    policy: Policy, proposal: Proposal, buyer: str, committee: tuple[str, ...] | None = None
) -> Decision:
    """Check `proposal`, posted by `buyer`, against every rule of `policy`; and, when given,
    the `committee` that accepted the job (checksummed addresses)."""
    reasons: list[str] = []
    members: list[str] = []
    for member in committee or ():
        try:
            address = checksum_address(member)
        except ValueError as error:
            reasons.append(f"committee member {member!r} is not a valid address: {error}")
            continue
        if address not in members:  # the contract draws distinct members; count them once
            members.append(address)
    size = proposal.committee_size
    if committee is not None:
        size = min(size, len(members))
    if size < policy.min_committee_size:
        reasons.append(
            f"a committee of {size} heavy node{'s' if size != 1 else ''} would hold the shares; "
            f"this policy requires at least {policy.min_committee_size}"
        )
    for member in members:
        if member in policy.denied_operators:
            reasons.append(f"committee member {member} is a denied operator")
        elif policy.allowed_operators is not None and member not in policy.allowed_operators:
            reasons.append(f"committee member {member} is not an allowed operator")
    if proposal.kind not in policy.allowed_kinds:
        reasons.append(
            f"kind {proposal.kind!r} is not allowed (allowed: {_listing(policy.allowed_kinds)})"
        )
    function = proposal.map.function
    if function not in policy.allowed_functions:
        reasons.append(
            f"map function {function!r} is not allowed "
            f"(allowed: {_listing(policy.allowed_functions)})"
        )
    wanted = proposal.privacy.min_participants
    if wanted < policy.min_participants:
        reasons.append(
            f"the proposal releases results over as few as {wanted} participant"
            f"{'s' if wanted != 1 else ''}; this policy requires at least "
            f"{policy.min_participants}"
        )
    if policy.allowed_buyers is not None:
        try:
            address = checksum_address(buyer)
        except ValueError as error:
            reasons.append(f"the buyer is not a valid address: {error}")
        else:
            if address not in policy.allowed_buyers:
                reasons.append(
                    f"buyer {address} is not allowed (allowed: {_listing(policy.allowed_buyers)})"
                )
    dp = proposal.privacy.dp
    if policy.require_dp and dp is None:
        reasons.append("the proposal has no differential privacy; this policy requires it")
    if policy.max_epsilon is not None:
        if dp is None:
            reasons.append(
                "without differential privacy epsilon is unbounded; this policy allows at most "
                f"epsilon {policy.max_epsilon:g}"
            )
        elif dp.epsilon > policy.max_epsilon:
            reasons.append(
                f"epsilon {dp.epsilon:g} exceeds this policy's maximum of {policy.max_epsilon:g}"
            )
    if policy.max_columns is not None:
        touched = columns_touched(proposal)
        if len(touched) > policy.max_columns:
            reasons.append(
                f"the map touches {len(touched)} columns ({_listing(touched)}); this policy "
                f"allows at most {policy.max_columns}"
            )
    if policy.min_budget_per_participant is not None:
        economics = proposal.economics
        # What the contract leaves for payouts, split over the fewest participants.
        share = payout_pool(economics.budget, economics.fee_bps) // wanted
        if share < policy.min_budget_per_participant:
            reasons.append(
                f"the budget pays at most {share} base units per participant "
                f"({economics.budget} less a {economics.fee_bps} bps fee, over {wanted}); this "
                f"policy asks for at least {policy.min_budget_per_participant}"
            )
    slash = proposal.economics.max_slash_bps
    if slash > policy.max_slash_bps:
        reasons.append(
            f"the proposal may slash up to {slash} bps of a stake; this policy allows at most "
            f"{policy.max_slash_bps} bps"
        )
    if reasons:
        return Decision("refuse", reasons)
    if policy.manual_approval:
        return Decision("manual", ["this policy holds every acceptable proposal for approval"])
    return Decision("accept", [])
