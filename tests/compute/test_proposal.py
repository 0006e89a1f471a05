"""The computation proposal: strict parsing, canonical JSON and hash, the round it configures."""

from __future__ import annotations

import copy
import functools
import json
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from compute import dp
from compute.addresses import checksum_address, keccak256
from compute.ensemble import Layout
from compute.errors import ReductionError
from compute.maps import run_map
from compute.messages import Result
from compute.proposal import (
    MAX_COMMITTEE,
    MIN_SLASHING_COMMITTEE,
    Proposal,
    ProposalError,
    parse_proposal,
)
from compute.reduce import ReduceOp
from compute.sharing import AdditiveScheme, ShamirScheme
from compute.simulation import simulate_round


def example(**changes: Any) -> dict[str, Any]:
    """A valid proposal as a JSON-like dict: the mean of two fields over adults."""
    raw: dict[str, Any] = {
        "version": 1,
        "kind": "aggregate",
        "title": "Mean systolic pressure and heart rate, adults",
        "map": {
            "function": "column_values",
            "params": {},
            "output": {
                "fields": [
                    {"name": "systolic", "lo": 0, "hi": 250, "scale": 2**10},
                    {"name": "pulse", "lo": 0, "hi": 250, "scale": 2**10},
                ]
            },
            "filter": {"column": "age", "op": ">=", "value": 18},
        },
        "reduce": {"op": "mean", "scheme": "shamir", "threat_model": "malicious-detect"},
        "privacy": {"min_participants": 3, "dp": None},
        "economics": {
            "budget": 10**21,
            "fee_bps": 500,
            "payout_rule": "equal",
            "max_slash_bps": 0,
        },
        "deadline": 1_767_225_600,
        "committee_size": 3,
        "quorum": 2,
    }
    raw.update(changes)
    return raw


BLOB = {"uri": "file:///tmp/blob", "sha256": "ab" * 32, "size": 1024}
VALUATION_TERMS = {
    "tip": {"model": {"kind": "softmax", "n_features": 2, "n_classes": 2},
            "projection": {"seed": 1, "k": 16}},
    "features": ["systolic", "pulse"],
    "label": "outcome",
    "model": BLOB,
    "context": BLOB,
    "query": BLOB,
    "committee": {"q_bits": 20, "g_bits": 10, "commitments": ["ab" * 32, "cd" * 32, "ef" * 32]},
}  # fmt: skip


def valuation_example() -> dict[str, Any]:
    """A valid valuation proposal: TIP terms, each provider's summed gradient shared."""
    return example(
        kind="valuation",
        map={"function": "summed_gradient", "output": {"fields": []}},
        reduce={"op": "sum", "scheme": "shamir", "threat_model": "semi-honest"},
        economics={"budget": 10**21, "fee_bps": 500, "payout_rule": "influence",
                   "max_slash_bps": 2_000},
        valuation=copy.deepcopy(VALUATION_TERMS),
    )  # fmt: skip


ENSEMBLE_TERMS: dict[str, Any] = {
    "evaluation": {"uri": "ipfs://bafkreievaluation", "sha256": "ab" * 32, "size": 4096},
    "features": 4,
    "classes": 3,
    "validation_rows": 5,
    "test_rows": 2,
}


def ensemble_example() -> dict[str, Any]:
    """A valid ensemble proposal: model holders' probabilities on a public evaluation set."""
    return example(
        kind="ensemble",
        map={"function": "model_probabilities", "output": {"fields": []}},
        reduce={"op": "weighted_sum", "scheme": "shamir", "threat_model": "malicious-detect"},
        economics={"budget": 10**21, "fee_bps": 500, "payout_rule": "ensemble_weight"},
        privacy={"min_participants": 2},
        ensemble=copy.deepcopy(ENSEMBLE_TERMS),
    )


def edit(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `raw` with the value at dotted `path` (list indices as numbers) set;
    `value` DELETE removes the key."""
    out = copy.deepcopy(raw)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = out
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


DELETE = object()


def test_the_example_parses_and_normalizes() -> None:
    proposal = parse_proposal(example())
    assert proposal.committee_size == 3 and proposal.quorum == 2
    assert proposal.reduce.threshold is None and proposal.threshold == 2
    assert proposal.map.output.fields[0].lo == 0.0 and isinstance(
        proposal.map.output.fields[0].lo, float
    )
    assert proposal.reduce.max_values == 10**6 and proposal.economics.max_slash_bps == 0


def test_canonical_bytes_are_sorted_compact_json_and_round_trip() -> None:
    proposal = parse_proposal(example())
    canonical = proposal.canonical_bytes()
    decoded = json.loads(canonical)
    assert canonical == json.dumps(decoded, sort_keys=True, separators=(",", ":")).encode()
    assert b" " not in canonical.replace(b"Mean systolic pressure and heart rate, adults", b"")
    assert parse_proposal(canonical) == proposal
    assert parse_proposal(canonical.decode()) == proposal
    assert parse_proposal(decoded) == proposal
    assert parse_proposal(canonical).canonical_bytes() == canonical
    # The buyer names a size, never members: the hashed terms carry no address.
    assert decoded["committee_size"] == 3 and "committee" not in decoded


def test_canonical_bytes_are_ascii() -> None:
    proposal = parse_proposal(example(title="Blutdruck, Ärztinnen — 血压"))
    canonical = proposal.canonical_bytes()
    assert canonical.isascii() and b"\\u00c4rztinnen" in canonical
    assert parse_proposal(canonical).title == "Blutdruck, Ärztinnen — 血压"
    assert parse_proposal(canonical) == proposal


def test_content_hash_is_keccak_of_the_canonical_bytes() -> None:
    proposal = parse_proposal(example())
    assert proposal.content_hash() == keccak(proposal.canonical_bytes())
    assert len(proposal.content_hash()) == 32
    assert keccak256(b"") == keccak(b"")


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@given(
    seed=st.integers(0, 2**32 - 1),
    indent=st.one_of(st.none(), st.integers(0, 8)),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,  ", " :\t")]),
)
def test_canonical_form_ignores_key_order_and_whitespace(
    seed: int, indent: int | None, separators: tuple[str, str]
) -> None:
    reference = parse_proposal(example())
    raw = _shuffled(example(), random.Random(seed))
    text = json.dumps(raw, indent=indent, separators=separators)
    parsed = parse_proposal(text.encode())
    assert parsed.canonical_bytes() == reference.canonical_bytes()
    assert parsed.content_hash() == reference.content_hash()


# Every leaf of the example, changed to another valid value.
CHANGES: list[tuple[str, Any]] = [
    ("kind", "ensemble"),  # with the edits below to stay valid
    ("title", "Mean systolic pressure and heart rate, adults."),
    ("map.output.fields.0.name", "diastolic"),
    ("map.output.fields.0.lo", -1),
    ("map.output.fields.0.hi", 249.5),
    ("map.output.fields.0.scale", 2**11),
    ("map.filter", None),
    ("map.filter.column", "years"),
    ("map.filter.op", ">"),
    ("map.filter.value", 21),
    ("map.filter.value", 18.0),
    ("reduce.op", "variance"),
    ("reduce.scheme", "additive"),
    ("reduce.threshold", 2),
    ("reduce.threat_model", "semi-honest"),
    ("reduce.max_values", 10**5),
    ("privacy.min_participants", 4),
    ("privacy.dp", {"epsilon": 1.0}),
    ("economics.budget", 10**21 + 1),
    ("economics.fee_bps", 0),
    ("economics.max_slash_bps", 100),
    ("deadline", 1_767_225_601),
    ("committee_size", 4),  # with quorum 3, a majority of 4 (see the test below)
    ("quorum", 3),
]


def _valid_change(path: str, value: Any) -> dict[str, Any]:
    raw = edit(example(), path, value)
    if path == "kind":
        raw = ensemble_example()
    if path == "committee_size":
        raw = edit(raw, "quorum", 3)
    if path in ("map.output.fields.0.lo", "map.output.fields.0.hi", "map.output.fields.0.scale"):
        raw = edit(raw, path.replace(".0.", ".1."), value)
    if path == "reduce.scheme":
        raw = edit(raw, "reduce.threat_model", "semi-honest")
    if path == "reduce.op":
        raw = edit(raw, "map.output.fields.0.hi", 100)
        raw = edit(raw, "map.output.fields.1.hi", 100)
    return raw


@pytest.mark.parametrize(("path", "value"), CHANGES, ids=[f"{p}={v}" for p, v in CHANGES])
def test_any_change_changes_the_hash(path: str, value: Any) -> None:
    reference = parse_proposal(example()).content_hash()
    assert parse_proposal(_valid_change(path, value)).content_hash() != reference


@pytest.mark.parametrize(
    ("small", "large"),
    [
        ({"committee_size": 2, "reduce.threat_model": "semi-honest"}, {"committee_size": 3}),
        ({"committee_size": 4, "quorum": 3}, {"committee_size": 5, "quorum": 3}),
    ],
)
def test_the_committee_size_alone_changes_the_hash(
    small: dict[str, Any], large: dict[str, Any]
) -> None:
    # Only the size differs (same quorum, threat model and everything else).
    base = {k: v for k, v in small.items() if k != "committee_size"}
    raws = []
    for sizes in (small, large):
        raw = example()
        for path, value in {**base, **sizes}.items():
            raw = edit(raw, path, value)
        raws.append(raw)
    a, b = (parse_proposal(r) for r in raws)
    assert a.committee_size != b.committee_size and a.quorum == b.quorum
    assert a.content_hash() != b.content_hash()


def test_an_explicit_default_hashes_like_an_omitted_one() -> None:
    # Defaults are part of the canonical form, so writing them out changes nothing...
    explicit = edit(example(), "reduce.max_values", 10**6)
    assert parse_proposal(explicit).content_hash() == parse_proposal(example()).content_hash()
    # ...but the threshold stays as written: None (majority) is not rewritten to 2.
    two = edit(example(), "reduce.threshold", 2)
    assert parse_proposal(two).content_hash() != parse_proposal(example()).content_hash()
    assert parse_proposal(two).scheme() == parse_proposal(example()).scheme()


# --- malformed proposals -------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], dict[str, Any]]


def at(path: str, value: Any) -> Mutation:
    return lambda raw: edit(raw, path, value)


def chain(*mutations: Mutation) -> Mutation:
    return lambda raw: functools.reduce(lambda acc, m: m(acc), mutations, raw)


def _histogram_without_bins(raw: dict[str, Any]) -> dict[str, Any]:
    raw = edit(raw, "reduce.op", "histogram")
    return edit(raw, "map.output.fields", raw["map"]["output"]["fields"][:1])


MALFORMED: list[tuple[str, Mutation, str, str]] = [
    # (id, mutation, path named, text in the message)
    ("unknown field", at("colour", "blue"), "colour", "unknown field (expected: version"),
    (
        "unknown nested field",
        at("map.output.fields.1.units", "bpm"),
        "map.output.fields[1].units",
        "unknown field (expected: name, lo, hi, scale)",
    ),
    ("float budget", at("economics.budget", 1.5), "economics.budget", "integer"),
    ("whole float budget", at("economics.budget", 1e21), "economics.budget", "integer"),
    ("string budget", at("economics.budget", "1000"), "economics.budget", "integer"),
    ("zero budget", at("economics.budget", 0), "economics.budget", "greater than 0"),
    ("budget over uint128", at("economics.budget", 2**128), "economics.budget", "less than"),
    ("boolean fee", at("economics.fee_bps", True), "economics.fee_bps", "integer"),
    ("fee too high", at("economics.fee_bps", 5001), "economics.fee_bps", "5000"),
    ("slash too high", at("economics.max_slash_bps", 10_001), "economics.max_slash_bps", ""),
    ("committee size 0", at("committee_size", 0), "committee_size", "greater than or equal to 1"),
    (
        "committee size 17",
        at("committee_size", 17),
        "committee_size",
        "less than or equal to 16, got 17",
    ),
    ("float committee size", at("committee_size", 3.0), "committee_size", "integer"),
    ("string committee size", at("committee_size", "3"), "committee_size", "integer"),
    ("boolean committee size", at("committee_size", True), "committee_size", "integer"),
    ("missing committee size", at("committee_size", DELETE), "committee_size", "missing"),
    (
        "members named by the buyer",
        chain(at("committee_size", DELETE), at("committee", ["0x" + "a1" * 20, "0x" + "b2" * 20])),
        "committee",
        "unknown field (expected: version",
    ),
    ("quorum not a majority", at("quorum", 1), "quorum", "not a strict majority"),
    ("quorum above committee", at("quorum", 4), "quorum", "use 2 to 3"),
    (
        "quorum half of an even committee",
        at("committee_size", 4),
        "quorum",
        "2 is not a strict majority of the 4-member committee (use 3 to 4)",
    ),
    (
        "quorum half of sixteen",
        chain(at("committee_size", 16), at("quorum", 8)),
        "quorum",
        "use 9 to 16",
    ),
    (
        "slashing with two members",
        chain(
            at("committee_size", 2),
            at("reduce.threat_model", "semi-honest"),
            at("economics.max_slash_bps", 1),
        ),
        "committee_size",
        "a job that may slash (max_slash_bps > 0) needs a committee of at least 3 "
        "(as Marketplace.sol checks); 2 is too few",
    ),  # fmt: skip
    (
        "one-member additive committee",
        chain(
            at("committee_size", 1),
            at("quorum", 1),
            at("reduce.scheme", "additive"),
            at("reduce.threat_model", "semi-honest"),
        ),
        "committee_size",
        "additive sharing needs at least 2 members",
    ),  # fmt: skip
    ("epsilon 0", at("privacy.dp", {"epsilon": 0}), "privacy.dp.epsilon", "greater than 0"),
    ("epsilon negative", at("privacy.dp", {"epsilon": -1.0}), "privacy.dp.epsilon", ""),
    ("delta 1", at("privacy.dp", {"epsilon": 1.0, "delta": 1}), "privacy.dp.delta", ""),
    ("dp without epsilon", at("privacy.dp", {}), "privacy.dp.epsilon", "missing"),
    ("min participants 0", at("privacy.min_participants", 0), "privacy.min_participants", ""),
    (
        "unknown function",
        at("map.function", "exec_python"),
        "map.function",
        "unknown map function 'exec_python' (vetted: ",
    ),
    (
        "unknown scheme",
        at("reduce.scheme", "paillier"),
        "reduce.scheme",
        "unknown scheme 'paillier' (use additive or shamir)",
    ),
    ("unknown op", at("reduce.op", "median"), "reduce.op", "unknown op 'median' (use sum,"),
    (
        "unknown threat model",
        at("reduce.threat_model", "malicious"),
        "reduce.threat_model",
        "unknown threat model 'malicious'",
    ),
    ("missing threat model", at("reduce.threat_model", DELETE), "reduce.threat_model", "missing"),
    ("unknown kind", at("kind", "training"), "kind", "unknown kind 'training'"),
    ("version 2", at("version", 2), "version", "unknown version 2 (use 1)"),
    ("missing title", at("title", DELETE), "title", "missing"),
    ("blank title", at("title", "   "), "title", "non-blank"),
    ("title on two lines", at("title", "a\nb"), "title", "one line"),
    ("float deadline", at("deadline", 1.7e9), "deadline", "integer"),
    (
        "histogram without bins",
        _histogram_without_bins,
        "reduce.bins",
        "a histogram needs bins",
    ),
    (
        "histogram over two fields",
        chain(at("reduce.op", "histogram"), at("reduce.bins", 10)),
        "map.output.fields",
        "exactly one field",
    ),
    ("bins for a mean", at("reduce.bins", 10), "reduce.bins", "only to op 'histogram'"),
    ("bins 0", at("reduce.bins", 0), "reduce.bins", "greater than or equal to 1"),
    (
        "count with fields",
        chain(at("reduce.op", "count"), at("map.function", "row_count")),
        "map.output.fields",
        "takes no output fields",
    ),
    (
        "mean without fields",
        at("map.output.fields", []),
        "map.output.fields",
        "needs at least one field",
    ),
    (
        "function cannot feed op",
        at("map.function", "row_count"),
        "map.function",
        "row_count cannot feed op 'mean' (it feeds: count)",
    ),
    (
        "fields with different bounds",
        at("map.output.fields.1.hi", 200),
        "map.output.fields[1]",
        "share lo, hi and scale",
    ),
    ("scale not a power of two", at("map.output.fields.0.scale", 1000), "fields[0].scale", "two"),
    ("lo above hi", at("map.output.fields.0.lo", 300), "map.output.fields[0].hi", "greater"),
    ("infinite bound", at("map.output.fields.0.hi", float("inf")), "fields[0].hi", "finite"),
    (
        "duplicate field names",
        at("map.output.fields.1.name", "systolic"),
        "map.output.fields",
        "unique",
    ),
    (
        "overflowing bounds",
        chain(at("map.output.fields.0.hi", 1e16), at("map.output.fields.1.hi", 1e16)),
        "map.output.fields[0].scale",
        "2^62",
    ),
    (
        "no headroom for a variance",
        chain(
            at("reduce.op", "variance"),
            at("map.output.fields.0.hi", 2000),
            at("map.output.fields.1.hi", 2000),
        ),
        "map.output.fields",
        "would wrap silently",
    ),
    (
        "aggregate paid by influence",
        at("economics.payout_rule", "influence"),
        "economics.payout_rule",
        "kind 'aggregate' fixes this to 'equal'",
    ),
    (
        "ensemble without weighted sum",
        chain(at("kind", "ensemble"), at("economics.payout_rule", "ensemble_weight")),
        "ensemble",
        "required field missing",
    ),
    (
        "additive with a threshold",
        chain(
            at("reduce.scheme", "additive"),
            at("reduce.threat_model", "semi-honest"),
            at("reduce.threshold", 2),
        ),
        "reduce.threshold",
        "3-of-3",
    ),  # fmt: skip
    (
        "additive claiming detection",
        at("reduce.scheme", "additive"),
        "reduce.threat_model",
        "needs scheme 'shamir'",
    ),
    (
        "3-of-3 shamir claiming detection",
        at("reduce.threshold", 3),
        "reduce.threat_model",
        "n >= t + 1",
    ),
    ("threshold 1", at("reduce.threshold", 1), "reduce.threshold", "one heavy node"),
    ("threshold above n", at("reduce.threshold", 4), "reduce.threshold", "exceeds"),
    (
        "a minority threshold",  # 2 of 16 drawn members would read every input
        chain(at("committee_size", 16), at("quorum", 9), at("reduce.threshold", 2)),
        "reduce.threshold",
        "2-of-16 Shamir lets a minority of the drawn committee (2 of 16) read every input",
    ),  # fmt: skip
    (
        "half is not a majority",
        chain(at("committee_size", 4), at("quorum", 3), at("reduce.threshold", 2)),
        "reduce.threshold",
        "use at least 3 (a majority)",
    ),  # fmt: skip
    (
        "one-member shamir committee",
        chain(
            at("committee_size", 1),
            at("quorum", 1),
            at("reduce.threat_model", "semi-honest"),
        ),
        "reduce.threshold",
        "1 (the default, a majority) would let one heavy node read every input",
    ),  # fmt: skip
    ("unknown map param", at("map.params", {"columns": "a"}), "map.params.columns", "no param"),
    ("infinite param", at("map.params", {"x": float("inf")}), "map.params", "finite"),
    ("nested param", at("map.params", {"x": [1]}), "map.params", "JSON scalar"),
    ("unknown filter op", at("map.filter.op", "~="), "map.filter.op", "unknown op '~='"),
    ("'in' without a list", at("map.filter.op", "in"), "map.filter.value", "list"),
    ("'<' with a string", at("map.filter.value", "18"), "map.filter.value", "number"),
    (
        "mixed 'in' list",
        chain(at("map.filter.op", "in"), at("map.filter.value", [1, "a"])),
        "map.filter.value",
        "not a mix",
    ),  # fmt: skip
    (
        "filter with null",
        chain(at("map.filter.op", "=="), at("map.filter.value", None)),
        "map.filter.value",
        "string, number or boolean",
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    ("mutation", "path", "text"), [case[1:] for case in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_every_malformed_field_is_refused_with_its_path(
    mutation: Mutation, path: str, text: str
) -> None:
    raw = mutation(example())
    with pytest.raises(ProposalError) as caught:
        parse_proposal(raw)
    message = str(caught.value)
    assert "\n" not in message
    assert any(p.endswith(path) for p, _ in caught.value.problems), message
    assert text in message, message
    # The same through JSON text, where pydantic's JSON mode does the parsing.
    if all(np.isfinite(v) for v in _numbers(raw)):
        with pytest.raises(ProposalError) as again:
            parse_proposal(json.dumps(raw))
        assert any(p.endswith(path) for p, _ in again.value.problems), str(again.value)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [value] if isinstance(value, float) else []


def test_the_example_message_from_the_brief() -> None:
    with pytest.raises(ProposalError, match=r"^reduce\.scheme: unknown scheme 'paillier' "):
        parse_proposal(edit(example(), "reduce.scheme", "paillier"))


def test_several_problems_are_reported_together_on_one_line() -> None:
    raw = chain(
        at("economics.budget", 2.5),
        at("committee_size", "3"),
        at("map.function", "eval"),
        at("surprise", 1),
    )(example())
    with pytest.raises(ProposalError) as caught:
        parse_proposal(raw)
    paths = [p for p, _ in caught.value.problems]
    assert sorted(paths) == ["committee_size", "economics.budget", "map.function", "surprise"]
    assert str(caught.value).count("; ") == 3 and "\n" not in str(caught.value)


def test_cross_field_problems_are_reported_together() -> None:
    raw = chain(at("quorum", 1), at("economics.payout_rule", "influence"), at("reduce.bins", 4))(
        example()
    )
    with pytest.raises(ProposalError) as caught:
        parse_proposal(raw)
    assert {p for p, _ in caught.value.problems} == {
        "quorum",
        "economics.payout_rule",
        "reduce.bins",
    }


@pytest.mark.parametrize(
    ("raw", "text"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "must be an object"), ("", "not valid JSON")],
)
def test_documents_that_are_not_objects(raw: bytes | str, text: str) -> None:
    with pytest.raises(ProposalError, match=text) as caught:
        parse_proposal(raw)
    assert caught.value.problems[0][0] == "proposal"


def test_proposal_error_is_a_value_error() -> None:
    assert issubclass(ProposalError, ValueError)


@given(st.binary(min_size=20, max_size=20), st.sampled_from(["lower", "upper", "checksum"]))
def test_addresses_are_checksummed_like_eth_utils(raw: bytes, case: str) -> None:
    expected = to_checksum_address(raw)
    given_form = {"lower": expected.lower(), "upper": "0x" + expected[2:].upper()}.get(
        case, expected
    )
    assert checksum_address(given_form) == expected


def test_mixed_case_with_a_wrong_checksum_is_refused() -> None:
    good = to_checksum_address("0x" + "ab" * 20)
    flipped = good[:2] + good[2:].swapcase()
    with pytest.raises(ValueError, match="checksum"):
        checksum_address(flipped)


# --- what a proposal configures ------------------------------------------------------------


def test_reduction_scheme_and_terms() -> None:
    proposal = parse_proposal(example())
    reduction = proposal.reduction()
    assert reduction.op is ReduceOp.MEAN and reduction.width == 2
    assert (reduction.field.lo, reduction.field.hi, reduction.field.scale) == (0.0, 250.0, 1024)
    assert proposal.scheme() == ShamirScheme(3, 2)
    assert proposal.privacy_terms() is None
    additive = parse_proposal(
        chain(at("reduce.scheme", "additive"), at("reduce.threat_model", "semi-honest"))(example())
    )
    assert additive.scheme() == AdditiveScheme(3) and additive.threshold == 3
    with_dp = parse_proposal(edit(example(), "privacy.dp", {"epsilon": 0.5, "delta": 1e-6}))
    assert with_dp.privacy_terms() == dp.PrivacyTerms(0.5, 1e-6)


@pytest.mark.parametrize(("n", "t"), [(2, 2), (3, 2), (4, 3), (5, 3), (16, 9)])
def test_shamir_threshold_defaults_to_a_strict_majority(n: int, t: int) -> None:
    proposal = parse_proposal(
        example(committee_size=n, quorum=n // 2 + 1)
        | {"reduce": {"op": "mean", "scheme": "shamir", "threat_model": "semi-honest"}}
    )
    assert proposal.scheme() == ShamirScheme(n, t)


def test_the_committee_bounds_are_the_contracts() -> None:
    # Marketplace.MAX_COMMITTEE and Marketplace.MIN_SLASHING_COMMITTEE.
    assert (MAX_COMMITTEE, MIN_SLASHING_COMMITTEE) == (16, 3)
    largest = chain(at("committee_size", MAX_COMMITTEE), at("quorum", MAX_COMMITTEE))(example())
    assert parse_proposal(largest).scheme() == ShamirScheme(MAX_COMMITTEE, 9)
    assert _problems(edit(largest, "committee_size", MAX_COMMITTEE + 1)) == [
        ("committee_size", f"must be less than or equal to 16, got {MAX_COMMITTEE + 1}")
    ]


def _problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        parse_proposal(raw)
    except ProposalError as error:
        return error.problems
    return []


@pytest.mark.parametrize("n", range(2, MAX_COMMITTEE + 1))
def test_quorum_is_a_strict_majority_of_the_committee_size(n: int) -> None:
    # Semi-honest: a 2-of-2 committee detects nothing, and the quorum is all this is about.
    sized = chain(at("reduce.threat_model", "semi-honest"), at("committee_size", n))(example())
    for quorum in range(1, MAX_COMMITTEE + 2):
        problems = _problems(edit(sized, "quorum", quorum))
        if n // 2 + 1 <= quorum <= n:
            assert problems == [], (quorum, problems)
        else:
            assert problems == [
                (
                    "quorum",
                    f"{quorum} is not a strict majority of the {n}-member committee "
                    f"(use {n // 2 + 1} to {n})",
                )
            ]


@pytest.mark.parametrize(
    ("n", "slash", "refused"),
    [(2, 0, False), (2, 1, True), (2, 10_000, True), (3, 1, False), (3, 10_000, False),
     (16, 10_000, False)],
)  # fmt: skip
def test_a_job_that_may_slash_needs_three_members(n: int, slash: int, refused: bool) -> None:
    raw = chain(
        at("committee_size", n),
        at("quorum", n // 2 + 1),
        at("reduce.threat_model", "semi-honest"),
        at("economics.max_slash_bps", slash),
    )(example())
    problems = _problems(raw)
    if refused:
        assert problems == [
            (
                "committee_size",
                f"a job that may slash (max_slash_bps > 0) needs a committee of at least 3 (as "
                f"Marketplace.sol checks); {n} is too few",
            )
        ]
    else:
        assert problems == []
        assert parse_proposal(raw).economics.max_slash_bps == slash


@pytest.mark.parametrize("scheme", ["additive", "shamir"])
def test_every_scheme_needs_two_members(scheme: str) -> None:
    one = chain(
        at("committee_size", 1),
        at("quorum", 1),
        at("reduce.scheme", scheme),
        at("reduce.threat_model", "semi-honest"),
    )(example())
    (problem,) = _problems(one)
    path = "committee_size" if scheme == "additive" else "reduce.threshold"
    assert problem[0] == path
    two = chain(at("committee_size", 2), at("quorum", 2))(one)
    assert parse_proposal(two).scheme().n == 2 and parse_proposal(two).threshold == 2


def test_count_and_histogram_reductions() -> None:
    count = parse_proposal(
        chain(
            at("reduce.op", "count"),
            at("map.function", "row_count"),
            at("map.output.fields", []),
        )(example())
    )
    assert count.reduction().op is ReduceOp.COUNT and count.reduction().width == 1
    histogram = parse_proposal(
        chain(_histogram_without_bins, at("reduce.bins", 25))(example())
    ).reduction()
    assert histogram.op is ReduceOp.HISTOGRAM and histogram.bins == 25 and histogram.width == 1


FRAME_A = pd.DataFrame(
    {
        "systolic": [120.0, 135.5, 300.0, np.nan, 110.0, 95.0],
        "pulse": [70, 80, 90, 65, -5, 60],
        "age": [34, 17, 50, 40, 71, 18],
    }
)
FRAME_B = pd.DataFrame(
    {
        "age": [25, 62, 45, 12],
        "pulse": [72.0, 88.0, 64.0, 100.0],
        "systolic": [118.0, 142.0, 128.0, 105.0],
        "site": ["x", "y", "x", "z"],
    }
)


def _plain(proposal: Proposal, frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The clipped rows the round should aggregate, computed with pandas alone."""
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["age"] >= 18].dropna(subset=["systolic", "pulse"])
    return rows[["systolic", "pulse"]].clip(0, 250)


@pytest.mark.parametrize("scheme", ["shamir", "additive"])
def test_round_config_end_to_end(scheme: str) -> None:
    raw = chain(
        at("reduce.scheme", scheme),
        at("reduce.threat_model", "malicious-detect" if scheme == "shamir" else "semi-honest"),
        at("privacy.min_participants", 2),
    )(example())
    proposal = parse_proposal(raw)
    config = proposal.round_config("job-7")
    assert config.job_id == "job-7"
    assert config.min_participants == 2 and config.privacy is None
    datasets = {"a": run_map(proposal, FRAME_A).records, "b": run_map(proposal, FRAME_B).records}
    outcomes = simulate_round(config, datasets, np.random.default_rng(0))
    assert len(outcomes) == 3
    expected = _plain(proposal, [FRAME_A, FRAME_B]).mean().to_numpy()
    for outcome in outcomes.values():
        assert isinstance(outcome, Result)
        assert outcome.participants == ("a", "b")
        assert outcome.aggregate.count == len(_plain(proposal, [FRAME_A, FRAME_B]))
        # Each value is rounded to the nearest 1/scale: the mean is within half a step.
        assert np.abs(outcome.values - expected).max() <= 0.5 / 1024


def test_round_config_below_the_minimum_aborts() -> None:
    proposal = parse_proposal(example())  # min_participants 3, two datasets
    config = proposal.round_config("job")
    datasets = {"a": run_map(proposal, FRAME_A).records, "b": run_map(proposal, FRAME_B).records}
    outcomes = simulate_round(config, datasets, np.random.default_rng(1))
    assert all(not isinstance(o, Result) for o in outcomes.values())


def test_round_config_with_dp_calibrates_noise() -> None:
    raw = chain(
        at("privacy.dp", {"epsilon": 4.0}),
        at("privacy.min_participants", 2),
        at("map.output.fields.0.hi", 1.0),
        at("map.output.fields.1.hi", 1.0),
        at("map.filter", None),
    )(example())
    proposal = parse_proposal(raw)
    config = proposal.round_config("job")
    assert config.privacy is not None and config.privacy.terms == dp.PrivacyTerms(4.0)
    rng = np.random.default_rng(2)
    datasets = {
        f"d{i}": pd.DataFrame(rng.uniform(0, 1, size=(300, 2)), columns=["systolic", "pulse"])
        for i in range(3)
    }
    records = {k: run_map(proposal, frame).records for k, frame in datasets.items()}
    outcomes = simulate_round(
        config, records, rng, noise=functools.partial(dp.sample_noise, config.privacy)
    )
    result = outcomes[1]
    assert isinstance(result, Result) and result.privacy is not None
    assert result.privacy.epsilon == pytest.approx(4.0, rel=1e-6)
    exact = pd.concat(datasets.values()).mean().to_numpy()
    assert np.abs(result.values - exact).max() < 0.1  # a few counts of noise over 900 records


def test_ensemble_proposals() -> None:
    proposal = parse_proposal(ensemble_example())
    assert proposal.ensemble is not None and proposal.ensemble.layout == Layout(5, 2, 3)
    reduction = proposal.reduction()
    # Per class: the validation rows' one-hot predictions and probabilities, the test rows'.
    assert reduction.op is ReduceOp.WEIGHTED_SUM and reduction.length == (2 * 5 + 2) * 3
    with pytest.raises(ReductionError, match="validation labels"):
        proposal.round_config("job")
    config = proposal.round_config("job", validation_labels=[0, 1, 2, 2, 1])
    assert config.ensemble is not None
    assert list(config.ensemble.columns) == [0, 4, 8, 11, 13]


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (at("ensemble", None), "ensemble", "EnsembleSpec"),
        (at("map.function", "column_values"), "map.function", "to 'model_probabilities'"),
        (at("map.filter", {"column": "a", "op": "==", "value": 1}), "map.filter", "no filter"),
        (at("privacy.dp", {"epsilon": 1.0}), "privacy.dp", "remove dp"),
        (at("economics.max_slash_bps", 100), "economics.max_slash_bps", "slashes nobody"),
        (at("ensemble.classes", 1), "ensemble.classes", ""),
        (
            chain(at("ensemble.test_rows", 2**20), at("ensemble.validation_rows", 2**20)),
            "ensemble.test_rows",
            "at most 4,194,304",
        ),
    ],
)
def test_bad_ensemble_terms_are_refused_with_their_path(
    change: Any, path: str, message: str
) -> None:
    with pytest.raises(ProposalError) as info:
        parse_proposal(change(ensemble_example()))
    assert path in str(info.value) and message in str(info.value)


def test_ensemble_terms_belong_to_ensemble_jobs_only() -> None:
    with pytest.raises(ProposalError, match="ensemble terms apply only to kind 'ensemble'"):
        parse_proposal(example(ensemble=copy.deepcopy(ENSEMBLE_TERMS)))


# --- generated proposals -------------------------------------------------------------------


@st.composite
def proposals(draw: st.DrawFn) -> dict[str, Any]:
    """Valid proposal documents across ops, schemes, filters and committee sizes."""
    op = draw(st.sampled_from(["sum", "count", "mean", "histogram"]))
    n = draw(st.integers(2, 16))
    scheme = draw(st.sampled_from(["additive", "shamir"]))
    scale = 2 ** draw(st.integers(0, 12))
    lo = draw(st.floats(-1000, 999, allow_nan=False).map(lambda x: round(x, 3)))
    hi = lo + draw(st.floats(0.5, 1000, allow_nan=False))
    width = 0 if op == "count" else (1 if op == "histogram" else draw(st.integers(1, 4)))
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=width, max_size=width,
                          unique=True))  # fmt: skip
    filter_ = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {
                    "column": st.text(min_size=1, max_size=8),
                    "op": st.just("<="),
                    "value": st.integers(-(2**53), 2**53),
                }
            ),
            st.fixed_dictionaries(
                {
                    "column": st.text(min_size=1, max_size=8),
                    "op": st.just("in"),
                    "value": st.lists(st.text(max_size=5), min_size=1, max_size=4),
                }
            ),
        )
    )
    dp_spec = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {"epsilon": st.floats(0.01, 10), "delta": st.sampled_from([0.0, 1e-6])}
            ),
        )
    )
    return {
        "version": 1,
        "kind": "aggregate",
        "title": draw(st.text(st.characters(min_codepoint=32, codec="utf-8"), min_size=1,
                              max_size=40).filter(str.strip)),
        "map": {
            "function": "row_count" if op == "count" else "column_values",
            "output": {"fields": [{"name": k, "lo": lo, "hi": hi, "scale": scale} for k in names]},
            "filter": filter_,
        },
        "reduce": {
            "op": op,
            "scheme": scheme,
            "threat_model": "semi-honest",
            "bins": draw(st.integers(1, 100)) if op == "histogram" else None,
        },
        "privacy": {"min_participants": draw(st.integers(1, 50)), "dp": dp_spec},
        "economics": {
            "budget": draw(st.integers(1, 2**128 - 1)),
            "fee_bps": draw(st.integers(0, 5000)),
            "payout_rule": "equal",
            # Slashing needs a committee of at least 3 (Marketplace.MIN_SLASHING_COMMITTEE).
            "max_slash_bps": draw(st.integers(0, 10_000)) if n >= 3 else 0,
        },
        "deadline": draw(st.integers(1, 2**64 - 1)),
        "committee_size": n,
        "quorum": draw(st.integers(n // 2 + 1, n)),
    }  # fmt: skip


@settings(max_examples=150)
@given(proposals())
def test_generated_proposals_round_trip_through_canonical_json(raw: dict[str, Any]) -> None:
    proposal = parse_proposal(raw)
    canonical = proposal.canonical_bytes()
    again = parse_proposal(canonical)
    assert again == proposal
    assert again.canonical_bytes() == canonical
    assert again.content_hash() == keccak(canonical)
    assert parse_proposal(json.loads(canonical)) == proposal
    assert proposal.reduction().length >= 1


@settings(max_examples=100)
@given(proposals(), st.data())
def test_generated_proposals_hash_every_budget_change(raw: dict[str, Any], data: Any) -> None:
    other = data.draw(st.integers(1, 2**128 - 1).filter(lambda b: b != raw["economics"]["budget"]))
    changed = edit(raw, "economics.budget", other)
    assert parse_proposal(changed).content_hash() != parse_proposal(raw).content_hash()


# --- valuation terms ----------------------------------------------------------------------


def test_a_valuation_proposal_parses_with_its_terms() -> None:
    proposal = parse_proposal(valuation_example())
    assert proposal.valuation is not None
    assert proposal.valuation.slashed_to == "payouts" and proposal.valuation.max_examples == 100_000
    assert parse_proposal(proposal.canonical_bytes()) == proposal


@pytest.mark.parametrize(
    ("mutate", "path", "text"),
    [
        (at("valuation", DELETE), "valuation", "required field missing"),
        (at("reduce.op", "count"), "reduce.op", "kind 'valuation' fixes this to 'sum'"),
        (at("reduce.scheme", "additive"), "reduce.scheme", "fixes this to 'shamir'"),
        (
            at("valuation.committee.commitments", ["ab" * 32]),
            "valuation.committee.commitments",
            "1 share commitments for a committee of 3",
        ),
        (at("committee_size", 4), "reduce.threshold", "cannot multiply"),
        (at("valuation.label", "pulse"), "valuation.label", "also a feature"),
        (at("valuation.features", ["a", "a"]), "valuation.features", "repeated: a"),
        (at("valuation.model.sha256", "AB" * 32), "valuation.model.sha256", "lowercase hex"),
        (
            at("valuation.committee.g_bits", -1),
            "valuation.committee.g_bits",
            "greater than or equal",
        ),
        (at("valuation.slashed_to", "buyer"), "valuation.slashed_to", "use payouts or burn"),
        (at("valuation.full_slash_at", 0.0), "valuation.full_slash_at", "greater than 0"),
    ],
)
def test_valuation_terms_are_checked(mutate: Mutation, path: str, text: str) -> None:
    with pytest.raises(ProposalError) as caught:
        parse_proposal(mutate(valuation_example()))
    assert any(p == path and text in m for p, m in caught.value.problems), caught.value.problems


def test_valuation_terms_are_refused_for_other_kinds() -> None:
    with pytest.raises(ProposalError, match="apply only to kind 'valuation', not 'aggregate'"):
        parse_proposal(example(valuation=copy.deepcopy(VALUATION_TERMS)))
