"""Nothing outside the kinds' registry branches on a kind's name, and every registered kind
is whole: its proposal class, a template that parses once the buyer's fields are filled in,
and the parts it fixes filled in when a proposal omits them."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from compute.kinds import KINDS
from compute.proposal import parse_proposal

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"compute/kinds", "nodes/kinds.py"}
"""Where a kind's name may be branched on: the kinds themselves and their node-side halves."""
EXEMPT_ATTRIBUTES = {
    # The valuation's CKKS payloads in the heavy node (the buyer's own view: a valuation
    # submission must carry them, the node serves them after the round); docs/kinds.md.
    ("nodes/heavy.py", "valuation"),
}
NAMES = set(KINDS)


def _names(node: ast.AST) -> set[str]:
    """The kind names a comparison operand spells: a literal, or a tuple/list/set of them."""
    if isinstance(node, ast.Constant) and node.value in NAMES:
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_names(e) for e in node.elts)) if node.elts else set()
    return set()


def _of_a_proposal(node: ast.AST) -> bool:
    """Whether `node` names a proposal or a job (`proposal`, `job`, `self.proposal`, `spec`),
    not a round's configuration (`config.ensemble` is the round's plan, not a kind's part)."""
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return name.endswith(("proposal", "job", "spec")) or name in {"p", "view"}


def branches(tree: ast.AST, path: str) -> list[str]:
    """Each place `tree` branches on a kind: a comparison with a kind's name (`==`, `!=`,
    `in`, `not in`), a `match` case on one, or an `is None` test of a proposal's kind part
    (`x.ensemble is None`)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(
                isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops
            ) and any(_names(o) for o in operands):
                found.append(f"{path}:{node.lineno}: compares with a kind's name")
            if any(isinstance(op, ast.Is | ast.IsNot) for op in node.ops):
                for o in operands:
                    if (
                        isinstance(o, ast.Attribute)
                        and o.attr in NAMES
                        and _of_a_proposal(o.value)
                        and (path, o.attr) not in EXEMPT_ATTRIBUTES
                    ):
                        found.append(f"{path}:{node.lineno}: tests .{o.attr} against None")
        elif isinstance(node, ast.match_case):
            pattern = node.pattern
            if isinstance(pattern, ast.MatchValue) and _names(pattern.value):
                found.append(f"{path}:{node.pattern.lineno}: a match case on a kind's name")
    return found


def test_nothing_outside_the_registry_branches_on_a_kind():
    found = []
    for package in ("compute", "nodes", "market"):
        for file in sorted((ROOT / package).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            if any(path == a or path.startswith(a + "/") for a in ALLOWED):
                continue
            found += branches(ast.parse(file.read_text(), path), path)
    assert found == [], "branches on kind names outside compute/kinds/:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        'if kind == "ensemble": pass',
        'if "aggregate" != proposal.kind: pass',
        'ok = kind in ("forecast", "valuation")',
        "if job.forecast is None: pass",
        'match kind:\n    case "valuation":\n        pass',
    ],
)
def test_the_check_sees_each_form_of_branch(source):
    assert branches(ast.parse(source), "x.py")


@pytest.mark.parametrize("source", ['d = {"ensemble": 1}', "if config.scoring is None: pass"])
def test_the_check_leaves_what_is_not_a_branch_on_a_kind(source):
    assert branches(ast.parse(source), "x.py") == []


_OPTIONS = {
    "aggregate": {},
    "ensemble": {
        "ensemble": {
            "evaluation": {"uri": "ipfs://bafyevaluation", "sha256": "a" * 64, "size": 100},
            "features": 4,
            "classes": 3,
            "validation_rows": 20,
            "test_rows": 10,
        }
    },
    "forecast": {"targets": 50, "resolution_time": 2_000_000_000},
    "valuation": {
        "valuation": {
            "tip": {"projection": {"seed": 1, "k": 8}},
            "features": ["a", "b"],
            "label": "y",
            "model": {"uri": "ipfs://bafymodel", "sha256": "b" * 64, "size": 10},
            "context": {"uri": "ipfs://bafycontext", "sha256": "c" * 64, "size": 10},
            "query": {"uri": "ipfs://bafyquery", "sha256": "d" * 64, "size": 10},
            "committee": {"q_bits": 20, "g_bits": 10, "commitments": ["e" * 64] * 3},
        }
    },
}
"""What each kind's template needs (terms the buyer's commands would publish)."""


def _buyer_fills(template: dict) -> dict:
    return {
        **template,
        "economics": {**template["economics"], "budget": 10**21},
        "deadline": 1_900_000_000,
        "committee_size": 3,
        "quorum": 2,
    }


def test_every_kind_is_registered_whole():
    assert set(_OPTIONS) == set(KINDS), "a new kind needs its template options here"
    for name, kind in KINDS.items():
        assert kind.name == name
        literal = kind.proposal_class.model_fields["kind"].annotation.__args__
        assert literal == (name,)
        assert kind.proposal_class.job_kind is kind
        template = kind.proposal_template(**_OPTIONS[name])
        assert template["kind"] == name
        proposal = parse_proposal(_buyer_fills(template))
        assert type(proposal) is kind.proposal_class
        assert proposal.economics.payout_rule == kind.payout_rule


def test_each_kind_fills_in_the_parts_it_fixes():
    for name, kind in KINDS.items():
        template = _buyer_fills(kind.proposal_template(**_OPTIONS[name]))
        for path in kind.fixed:
            node = template
            for key in path[:-1]:
                node = node[key]
            del node[path[-1]]
        proposal = parse_proposal(template)
        for path, value in kind.fixed.items():
            got = proposal
            for key in path:
                got = getattr(got, key)
            dumped = got.model_dump(mode="json") if hasattr(got, "model_dump") else str(got)
            assert dumped == value, (name, path)


def test_a_template_missing_what_its_kind_needs_says_which():
    from compute.kinds.base import MissingOption

    for kind in KINDS.values():
        for option in kind.template_needs:
            options = {k: v for k, v in _OPTIONS[kind.name].items() if k != option}
            with pytest.raises(MissingOption) as refused:
                kind.proposal_template(**options)
            assert refused.value.option == option
    assert time.time() < 2_000_000_000  # the forecast's resolution time above is in the future
