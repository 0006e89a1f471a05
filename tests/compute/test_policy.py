"""A provider's policy: each rule refuses with its own reason, all at once, or asks for approval."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from compute.maps import MAP_FUNCTIONS
from compute.policy import Decision, Policy, PolicyError, evaluate, parse_policy
from compute.proposal import Proposal, parse_proposal
from tests.compute.test_proposal import VALUATION_TERMS, edit, example

BUYER = "0x" + "be" * 20
OTHER = "0x" + "0f" * 20
# Heavy-node operators, checksummed as the chain reports a drawn committee (ascending).
A, B, C, D = (to_checksum_address("0x" + h * 20) for h in ("1a", "2b", "3c", "4d"))


def proposal(**edits: Any) -> Proposal:
    """The example proposal (aggregate mean of 2 columns filtered on a third, 3 participants,
    no DP, no slashing, 10^21 budget at a 500 bps fee), with `edits` by dotted path."""
    raw = example()
    for path, value in edits.items():
        raw = edit(raw, path.replace("__", "."), value)
    return parse_proposal(raw)


VALUATION = {
    "kind": "valuation",
    "map": {"function": "summed_gradient", "output": {"fields": []}},
    "reduce__op": "sum",
    "reduce__threat_model": "semi-honest",
    "economics__payout_rule": "influence",
    "valuation": VALUATION_TERMS,
}


def _valuation(size: int) -> dict[str, Any]:
    """VALUATION for a committee of `size`: one share commitment per member, and a threshold
    at which the committee can multiply."""
    terms = {**VALUATION_TERMS, "committee": {**VALUATION_TERMS["committee"],
                                              "commitments": ["ab" * 32] * size}}  # fmt: skip
    return {**VALUATION, "valuation": terms, "reduce__threshold": (size + 1) // 2}


def test_the_default_policy() -> None:
    policy = Policy.default()
    assert policy.allowed_kinds == {"aggregate"}
    assert policy.allowed_functions == set(MAP_FUNCTIONS)
    assert policy.min_participants == 3 and policy.allowed_buyers is None
    assert not policy.require_dp and policy.max_slash_bps == 0 and not policy.manual_approval
    assert policy.min_committee_size == 2 and policy.allowed_operators is None
    assert policy.denied_operators == frozenset()
    assert evaluate(policy, proposal(), BUYER) == Decision("accept", [])
    assert evaluate(policy, proposal(), BUYER).accepted
    assert evaluate(policy, proposal(), BUYER, (A, B, C)) == Decision("accept", [])


# (id, policy fields, proposal edits, reason text)
RULES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("kind", {}, VALUATION, "kind 'valuation' is not allowed (allowed: aggregate)"),
    (
        "function",
        {"allowed_functions": ["row_count"]},
        {},
        "map function 'column_values' is not allowed (allowed: row_count)",
    ),
    (
        "min participants",
        {"min_participants": 5},
        {},
        "releases results over as few as 3 participants; this policy requires at least 5",
    ),
    ("buyer", {"allowed_buyers": [OTHER]}, {}, f"buyer {to_checksum_address(BUYER)} is not"),
    ("dp required", {"require_dp": True}, {}, "no differential privacy; this policy requires it"),
    (
        "epsilon too large",
        {"max_epsilon": 1.0},
        {"privacy__dp": {"epsilon": 2.5}},
        "epsilon 2.5 exceeds this policy's maximum of 1",
    ),
    (
        "epsilon unbounded",
        {"max_epsilon": 1.0},
        {},
        "without differential privacy epsilon is unbounded",
    ),
    (
        "columns",
        {"max_columns": 2},
        {},
        "the map touches 3 columns (age, pulse, systolic); this policy allows at most 2",
    ),
    (
        "budget",
        {"min_budget_per_participant": 10**21},
        {},
        f"pays at most {10**21 * 9500 // 10000 // 3} base units per participant",
    ),
    (
        "slash",
        {},
        {"economics__max_slash_bps": 250},
        "may slash up to 250 bps of a stake; this policy allows at most 0 bps",
    ),
    (
        "committee size",
        {"min_committee_size": 4},
        {},
        "a committee of 3 heavy nodes would hold the shares; this policy requires at least 4",
    ),
]


@pytest.mark.parametrize(
    ("fields", "edits", "text"), [r[1:] for r in RULES], ids=[r[0] for r in RULES]
)
def test_each_rule_refuses_with_its_own_reason(
    fields: dict[str, Any], edits: dict[str, Any], text: str
) -> None:
    policy = Policy.model_validate(fields)
    decision = evaluate(policy, proposal(**edits), BUYER)
    assert decision.verdict == "refuse"
    assert len(decision.reasons) == 1, decision.reasons
    assert text in decision.reasons[0]
    # The same policy accepts when the rule is satisfied.
    assert evaluate(Policy(), proposal(), BUYER).verdict == "accept"


COMMITTEE_RULES: list[tuple[str, dict[str, Any], tuple[str, ...], str, tuple[str, ...]]] = [
    # (id, policy fields, a committee it refuses, the one reason, a committee it accepts)
    (
        "too few accepted",
        {"min_committee_size": 3},
        (A, B),
        "a committee of 2 heavy nodes would hold the shares; this policy requires at least 3",
        (A, B, C),
    ),
    (
        "one accepted",
        {},
        (A,),
        "a committee of 1 heavy node would hold the shares; this policy requires at least 2",
        (A, D),
    ),
    (
        "operator not allowed",
        {"allowed_operators": [A, B]},
        (A, B, C),
        f"committee member {C} is not an allowed operator",
        (A, B),
    ),
    (
        "operator denied",
        {"denied_operators": [B]},
        (A, B, C),
        f"committee member {B} is a denied operator",
        (A, C, D),
    ),
    (
        "denied though allowed",
        {"allowed_operators": [A, B, C], "denied_operators": [B]},
        (A, B, C),
        f"committee member {B} is a denied operator",
        (A, C),
    ),
    (
        "denied and not allowed",
        {"allowed_operators": [A, C], "denied_operators": [B]},
        (A, B, C),
        f"committee member {B} is a denied operator",  # one sentence per member
        (A, C),
    ),
]


@pytest.mark.parametrize(
    ("fields", "refused", "text", "accepted"),
    [r[1:] for r in COMMITTEE_RULES],
    ids=[r[0] for r in COMMITTEE_RULES],
)
def test_each_committee_rule_refuses_with_its_own_reason(
    fields: dict[str, Any], refused: tuple[str, ...], text: str, accepted: tuple[str, ...]
) -> None:
    policy = Policy.model_validate(fields)
    assert evaluate(policy, proposal(), BUYER, refused) == Decision("refuse", [text])
    # The same policy accepts a committee that satisfies it...
    assert evaluate(policy, proposal(), BUYER, accepted) == Decision("accept", [])
    # ...and, before the committee is known, the proposal's size of 3.
    assert evaluate(policy, proposal(), BUYER).verdict == "accept"


def test_without_a_committee_the_proposals_size_is_judged() -> None:
    four = proposal(committee_size=4, quorum=3)
    at_least_four = Policy(min_committee_size=4)
    assert evaluate(at_least_four, four, BUYER).accepted
    refused = evaluate(at_least_four, proposal(), BUYER)
    assert refused == Decision(
        "refuse",
        ["a committee of 3 heavy nodes would hold the shares; this policy requires at least 4"],
    )
    # The same sentence once the whole committee of 3 has accepted.
    assert evaluate(at_least_four, proposal(), BUYER, (A, B, C)) == refused
    # No member is known yet, so no operator rule can refuse.
    strict = Policy(allowed_operators=frozenset(), denied_operators=frozenset({A, B, C, D}))
    assert evaluate(strict, four, BUYER).accepted
    assert evaluate(strict, four, BUYER, None).accepted


def test_the_members_that_accepted_are_judged_not_the_size_asked_for() -> None:
    four = proposal(committee_size=4, quorum=3)
    # D was drawn but did not accept: three members hold the shares.
    accepted = (A, B, C)
    assert evaluate(Policy(min_committee_size=4), four, BUYER, (A, B, C, D)).accepted
    assert evaluate(Policy(min_committee_size=4), four, BUYER, accepted) == Decision(
        "refuse",
        ["a committee of 3 heavy nodes would hold the shares; this policy requires at least 4"],
    )
    assert evaluate(Policy(min_committee_size=3), four, BUYER, accepted).accepted
    # Operator rules look only at those that accepted: D, denied or not allowed, holds nothing.
    assert evaluate(Policy(denied_operators=frozenset({D})), four, BUYER, accepted).accepted
    assert evaluate(Policy(allowed_operators=frozenset(accepted)), four, BUYER, accepted).accepted
    denied_d = evaluate(Policy(denied_operators=frozenset({D})), four, BUYER, (A, B, C, D))
    assert denied_d.reasons == [f"committee member {D} is a denied operator"]


def test_a_committee_counts_for_no_more_than_the_proposal_asks() -> None:
    # The contract draws exactly `committee_size` members; a longer list is not credited.
    refused = evaluate(Policy(min_committee_size=4), proposal(), BUYER, (A, B, C, D))
    assert refused.reasons == [
        "a committee of 3 heavy nodes would hold the shares; this policy requires at least 4"
    ]


def test_every_member_off_the_lists_is_named() -> None:
    policy = Policy(allowed_operators=frozenset(), denied_operators=frozenset({C}))
    decision = evaluate(policy, proposal(), BUYER, (A, B, C))
    assert decision == Decision(
        "refuse",
        [
            f"committee member {A} is not an allowed operator",
            f"committee member {B} is not an allowed operator",
            f"committee member {C} is a denied operator",
        ],
    )
    # No members at all: nobody holds the shares.
    nobody = evaluate(Policy(), proposal(), BUYER, ())
    assert nobody.reasons == [
        "a committee of 0 heavy nodes would hold the shares; this policy requires at least 2"
    ]


def test_operators_are_compared_checksummed() -> None:
    policy = Policy.model_validate(
        {"allowed_operators": [A.lower(), B.upper().replace("0X", "0x")], "denied_operators": [C]}
    )
    assert policy.allowed_operators == {A, B} and policy.denied_operators == {C}
    assert evaluate(policy, proposal(), BUYER, (A, B)).accepted
    assert evaluate(policy, proposal(), BUYER, (A, C)).reasons == [
        f"committee member {C} is a denied operator"
    ]


def test_every_failing_rule_is_reported_at_once() -> None:
    policy = Policy.model_validate(
        {
            "allowed_functions": ["column_values"],
            "min_participants": 10,
            "allowed_buyers": [OTHER],
            "require_dp": True,
            "max_epsilon": 0.5,
            "max_columns": 1,
            "min_budget_per_participant": 10**30,
            "manual_approval": True,
            "min_committee_size": 4,
            "allowed_operators": [A],
            "denied_operators": [B],
        }
    )
    candidate = proposal(**VALUATION, economics__max_slash_bps=1)
    decision = evaluate(policy, candidate, BUYER, (A, B, C))
    assert decision.verdict == "refuse"  # refusal wins over manual approval
    assert len(decision.reasons) == 12  # every rule, and both members off the lists
    assert len(set(decision.reasons)) == 12
    # Without the committee, the operator rules wait and the size is the proposal's.
    assert len(evaluate(policy, candidate, BUYER).reasons) == 10


def test_manual_approval_only_when_no_rule_fails() -> None:
    policy = Policy(manual_approval=True)
    decision = evaluate(policy, proposal(), BUYER)
    assert decision.verdict == "manual" and len(decision.reasons) == 1
    assert not decision.accepted
    assert evaluate(policy, proposal(**VALUATION), BUYER).verdict == "refuse"


def test_buyers_are_compared_checksummed() -> None:
    policy = Policy.model_validate({"allowed_buyers": [BUYER.upper().replace("0X", "0x")]})
    assert policy.allowed_buyers == {to_checksum_address(BUYER)}
    assert evaluate(policy, proposal(), BUYER).verdict == "accept"
    assert evaluate(policy, proposal(), to_checksum_address(BUYER)).verdict == "accept"
    refused = evaluate(policy, proposal(), "not-an-address")
    assert refused.verdict == "refuse" and "not a valid address" in refused.reasons[0]
    # Any buyer when no list is given; an empty list admits none.
    assert evaluate(Policy(), proposal(), OTHER).verdict == "accept"
    assert evaluate(Policy(allowed_buyers=frozenset()), proposal(), BUYER).verdict == "refuse"


def test_epsilon_at_the_maximum_is_accepted() -> None:
    policy = Policy(max_epsilon=1.0, require_dp=True)
    assert evaluate(policy, proposal(privacy__dp={"epsilon": 1.0}), BUYER).verdict == "accept"
    assert evaluate(policy, proposal(privacy__dp={"epsilon": 1.0001}), BUYER).verdict == "refuse"


@pytest.mark.parametrize("fee_bps", [0, 1, 500, 5000])
@pytest.mark.parametrize("participants", [1, 3, 7])
def test_budget_per_participant_is_exact_at_the_boundary(fee_bps: int, participants: int) -> None:
    budget = 10**6 + 7
    candidate = proposal(
        economics__budget=budget,
        economics__fee_bps=fee_bps,
        privacy__min_participants=participants,
    )
    # The contract's pool: the fee floors, so the pool (and each part) rounds in the providers'
    # favour, never below the exact share.
    floor = (budget - budget * fee_bps // 10_000) // participants
    assert floor >= math.floor(Fraction(budget * (10_000 - fee_bps), 10_000 * participants))
    lenient = {"min_participants": 1}
    assert evaluate(Policy(**lenient, min_budget_per_participant=floor), candidate, BUYER).accepted
    refused = evaluate(Policy(**lenient, min_budget_per_participant=floor + 1), candidate, BUYER)
    assert refused.verdict == "refuse" and f"at most {floor} base units" in refused.reasons[0]


def test_columns_include_the_filter_column() -> None:
    no_filter = proposal(map__filter=None)
    assert evaluate(Policy(max_columns=2), no_filter, BUYER).accepted
    assert not evaluate(Policy(max_columns=2), proposal(), BUYER).accepted


def test_slash_within_the_cap_is_accepted() -> None:
    risky = proposal(economics__max_slash_bps=250)
    assert evaluate(Policy(max_slash_bps=250), risky, BUYER).accepted
    assert not evaluate(Policy(max_slash_bps=249), risky, BUYER).accepted


# --- loading -------------------------------------------------------------------------------


def test_loading_a_toml_like_document() -> None:
    document = {
        "allowed_kinds": ["aggregate", "ensemble"],
        "allowed_functions": ["column_values"],
        "min_participants": 5,
        "allowed_buyers": [BUYER],
        "require_dp": True,
        "max_epsilon": 2,  # TOML may give an integer
        "max_columns": 4,
        "min_budget_per_participant": 1000,
        "max_slash_bps": 100,
        "manual_approval": False,
        "min_committee_size": 3,
        "allowed_operators": [A.lower(), B],
        "denied_operators": [C],
    }
    policy = Policy.model_validate(document)
    assert policy.max_epsilon == 2.0 and policy.allowed_kinds == {"aggregate", "ensemble"}
    assert policy.min_committee_size == 3 and policy.allowed_operators == {A, B}
    assert parse_policy(policy.model_dump_json()) == policy
    assert parse_policy(document) == policy


@pytest.mark.parametrize(
    ("document", "path", "text"),
    [
        ({"allow_kinds": ["aggregate"]}, "allow_kinds", "unknown field (expected: allowed_kinds"),
        ({"allowed_kinds": ["training"]}, "allowed_kinds[0]", "unknown allowed kinds 'training'"),
        ({"allowed_functions": ["exec"]}, "allowed_functions", "unknown map function 'exec'"),
        ({"min_participants": 2.5}, "min_participants", "integer"),
        ({"min_participants": 0}, "min_participants", "greater than or equal to 1"),
        ({"require_dp": "yes"}, "require_dp", "boolean"),
        ({"max_epsilon": 0}, "max_epsilon", "greater than 0"),
        ({"max_slash_bps": 10_001}, "max_slash_bps", "less than or equal to 10000"),
        ({"allowed_buyers": ["0x12"]}, "allowed_buyers", "not an address"),
        ({"min_budget_per_participant": 1e18}, "min_budget_per_participant", "integer"),
        ({"min_committee_size": 0}, "min_committee_size", "greater than or equal to 1"),
        ({"min_committee_size": 17}, "min_committee_size", "less than or equal to 16"),
        ({"min_committee_size": 2.0}, "min_committee_size", "integer"),
        ({"min_committee_size": "3"}, "min_committee_size", "integer"),
        ({"allowed_operators": ["0x12"]}, "allowed_operators", "not an address"),
        (
            {"denied_operators": ["0x" + A[2:].swapcase()]},  # mixed case, wrong checksum
            "denied_operators",
            "checksum",
        ),
    ],
)
def test_malformed_policies_name_the_field(document: dict[str, Any], path: str, text: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    assert any(p.startswith(path) for p, _ in caught.value.problems), str(caught.value)
    assert text in str(caught.value)
    with pytest.raises(ValidationError):
        Policy.model_validate(document)


# --- properties ----------------------------------------------------------------------------

policies = st.builds(
    Policy,
    allowed_kinds=st.frozensets(st.sampled_from(["aggregate", "ensemble", "valuation"])),
    allowed_functions=st.frozensets(st.sampled_from(sorted(MAP_FUNCTIONS))),
    min_participants=st.integers(1, 6),
    allowed_buyers=st.one_of(st.none(), st.frozensets(st.sampled_from([BUYER, OTHER]))),
    require_dp=st.booleans(),
    max_epsilon=st.one_of(st.none(), st.floats(0.1, 5)),
    max_columns=st.one_of(st.none(), st.integers(1, 4)),
    min_budget_per_participant=st.one_of(st.none(), st.integers(0, 10**21)),
    max_slash_bps=st.integers(0, 500),
    manual_approval=st.booleans(),
    min_committee_size=st.integers(1, 5),
    allowed_operators=st.one_of(st.none(), st.frozensets(st.sampled_from([A, B, C, D]))),
    denied_operators=st.frozensets(st.sampled_from([A, B, C, D])),
)


def _candidate(participants: int, dp: Any, slash: int, kind: bool, size: int) -> Proposal:
    size = max(size | 1, 3) if kind else size  # a valuation's products: odd n, t = (n + 1) / 2
    return proposal(
        privacy__min_participants=participants,
        privacy__dp=None if kind else dp,  # a valuation adds no noise
        economics__max_slash_bps=slash if size >= 3 else 0,  # slashing needs 3 members
        committee_size=size,
        quorum=size // 2 + 1,
        **(_valuation(size) if kind else {"reduce__threat_model": "semi-honest"}),
    )


candidates = st.builds(
    _candidate,
    st.integers(1, 6),
    st.one_of(st.none(), st.builds(lambda e: {"epsilon": e}, st.floats(0.1, 5))),
    st.integers(0, 500),
    st.booleans(),
    st.integers(2, 5),
)
committees = st.one_of(
    st.none(),
    st.lists(st.sampled_from([A, B, C, D]), max_size=4, unique=True).map(
        lambda m: tuple(sorted(m, key=lambda a: int(a, 16)))
    ),
)


@settings(max_examples=200)
@given(policies, candidates, st.sampled_from([BUYER, OTHER]), committees)
def test_verdict_follows_the_reasons(
    policy: Policy, candidate: Proposal, buyer: str, committee: tuple[str, ...] | None
) -> None:
    if committee is not None:
        committee = committee[: candidate.committee_size]  # the contract draws that many
    decision = evaluate(policy, candidate, buyer, committee)
    if decision.verdict == "refuse":
        assert decision.reasons
    elif policy.manual_approval:
        assert decision.verdict == "manual"
    else:
        assert decision == Decision("accept", [])
    # Dropping every rule but the kind and function lists never adds a reason.
    lenient = Policy(
        allowed_kinds=policy.allowed_kinds,
        allowed_functions=policy.allowed_functions,
        min_participants=1,
        max_slash_bps=10_000,
        min_committee_size=1,
    )
    assert len(evaluate(lenient, candidate, buyer, committee).reasons) <= len(decision.reasons)
    # Knowing who accepted can only add reasons: a subset of the size, members on the lists.
    assert len(evaluate(policy, candidate, buyer).reasons) <= len(decision.reasons)


def test_committee_members_are_normalized_and_counted_once() -> None:
    """A member given in lowercase is still denied, and a repeated member counts once."""
    lower = A.lower()
    denied = evaluate(Policy(denied_operators=frozenset({A})), proposal(), BUYER, (lower, B))
    assert denied.reasons == [f"committee member {A} is a denied operator"]
    repeated = evaluate(Policy(min_committee_size=3), proposal(), BUYER, (B, B, B))
    assert repeated.reasons[0].startswith("a committee of 1 heavy node would hold the shares")
