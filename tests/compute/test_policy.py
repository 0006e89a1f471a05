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


def proposal(**edits: Any) -> Proposal:
    """The example proposal (aggregate mean of 2 columns filtered on a third, 3 participants,
    no DP, no slashing, 10^21 budget at a 500 bps fee), with `edits` by dotted path."""
    raw = example()
    for path, value in edits.items():
        raw = edit(raw, path.replace("__", "."), value)
    return parse_proposal(raw)


VALUATION = {
    "kind": "valuation",
    "map": {"function": "row_count", "output": {"fields": []}},
    "reduce__op": "count",
    "reduce__threat_model": "semi-honest",
    "economics__payout_rule": "influence",
    "valuation": VALUATION_TERMS,
}


def test_the_default_policy() -> None:
    policy = Policy.default()
    assert policy.allowed_kinds == {"aggregate"}
    assert policy.allowed_functions == set(MAP_FUNCTIONS)
    assert policy.min_participants == 3 and policy.allowed_buyers is None
    assert not policy.require_dp and policy.max_slash_bps == 0 and not policy.manual_approval
    assert evaluate(policy, proposal(), BUYER) == Decision("accept", [])
    assert evaluate(policy, proposal(), BUYER).accepted


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
        }
    )
    decision = evaluate(policy, proposal(**VALUATION, economics__max_slash_bps=1), BUYER)
    assert decision.verdict == "refuse"  # refusal wins over manual approval
    assert len(decision.reasons) == 9  # every rule
    assert len(set(decision.reasons)) == 9


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
    share = Fraction(budget * (10_000 - fee_bps), 10_000 * participants)
    floor = math.floor(share)
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
    }
    policy = Policy.model_validate(document)
    assert policy.max_epsilon == 2.0 and policy.allowed_kinds == {"aggregate", "ensemble"}
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
)

candidates = st.builds(
    lambda participants, dp, slash, kind: proposal(
        privacy__min_participants=participants,
        privacy__dp=dp,
        economics__max_slash_bps=slash,
        **(VALUATION if kind else {}),
    ),
    st.integers(1, 6),
    st.one_of(st.none(), st.builds(lambda e: {"epsilon": e}, st.floats(0.1, 5))),
    st.integers(0, 500),
    st.booleans(),
)


@settings(max_examples=200)
@given(policies, candidates, st.sampled_from([BUYER, OTHER]))
def test_verdict_follows_the_reasons(policy: Policy, candidate: Proposal, buyer: str) -> None:
    decision = evaluate(policy, candidate, buyer)
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
    )
    assert len(evaluate(lenient, candidate, buyer).reasons) <= len(decision.reasons)
