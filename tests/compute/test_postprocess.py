"""Counts grouped by a category and their public post-processing: the figures against hand
computation and NumPy, the noise bound, and the refusals of bad specs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute import postprocess as pp
from compute.maps import columns_touched, run_map
from compute.proposal import ProposalError, parse_proposal

CATEGORIES = ("news", "sport", "music", "film")


def audit(**changes: Any) -> dict[str, Any]:
    """An audit proposal: category_counts over `item`, three post-processing steps."""
    raw: dict[str, Any] = {
        "version": 1,
        "kind": "aggregate",
        "title": "Exposure by category",
        "map": {
            "function": "category_counts",
            "params": {"column": "item", "categories": ",".join(CATEGORIES)},
            "output": {"fields": []},
        },
        "reduce": {
            "op": "histogram",
            "scheme": "shamir",
            "threat_model": "semi-honest",
            "bins": len(CATEGORIES),
        },  # fmt: skip
        "privacy": {"min_participants": 2, "dp": {"epsilon": 1.0}},
        "economics": {"budget": 10**18, "fee_bps": 0, "payout_rule": "equal"},
        "deadline": 2_000_000_000,
        "committee_size": 3,
        "quorum": 2,
        "postprocess": [
            {"function": "gini"},
            {"function": "top_share", "params": {"percent": 25}},
            {"function": "baseline_ratio", "params": {"baseline": dict.fromkeys(CATEGORIES, 1)}},
        ],
    }
    raw.update(changes)
    return raw


def gini_by_pairs(x: np.ndarray) -> float:
    """The definition: mean absolute difference over twice the mean."""
    x = np.maximum(np.asarray(x, dtype=float), 0)
    if x.sum() == 0:
        return 0.0
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size * x.sum()))


# --- the figures -----------------------------------------------------------------------------


def test_figures_by_hand() -> None:
    assert pp.gini([1, 1, 1, 1]) == 0.0
    assert pp.gini([0, 0, 0, 8]) == pytest.approx(3 / 4)  # all in one of 4: (n - 1) / n
    assert pp.gini([3, 1, 1, 0]) == pytest.approx(0.45)  # sum |xi - xj| = 18, 2 n S = 40
    assert pp.top_share([3, 1, 1, 0], 25) == pytest.approx(3 / 5)
    assert pp.top_share(list(range(1, 21)), 10) == pytest.approx((20 + 19) / 210)
    assert pp.top_groups(40, 10) == 4 and pp.top_groups(7, 10) == 1 and pp.top_groups(11, 10) == 2
    ratios = pp.baseline_ratio([30, 10, 10, 0], [2, 1, 1, 0.5])  # baseline shares 4/9 ... 1/9
    assert ratios == pytest.approx([0.6 / (4 / 9), 0.2 / (2 / 9), 0.2 / (2 / 9), 0.0])


def test_negative_noisy_counts_count_as_zero() -> None:
    assert pp.gini([-5, 0, 0, 8]) == pp.gini([0, 0, 0, 8])
    assert pp.top_share([-3, 2, 2], 33) == pytest.approx(1 / 2)
    assert pp.gini([-1, -2]) == 0.0 and pp.top_share([-1, -2]) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-50, 10_000), min_size=1, max_size=60))
def test_gini_is_the_pairwise_definition(counts: list[int]) -> None:
    assert pp.gini(counts) == pytest.approx(gini_by_pairs(np.array(counts)), abs=1e-12)
    assert 0.0 <= pp.gini(counts) <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=60),
    st.floats(0.5, 100.0, allow_nan=False),
)
def test_top_share_is_the_sorted_prefix(counts: list[int], percent: float) -> None:
    x = np.array(counts, dtype=float)
    m = max(1, math.ceil(len(x) * percent / 100 - 1e-9))
    expected = 0.0 if x.sum() == 0 else np.sort(x)[::-1][:m].sum() / x.sum()
    assert pp.top_share(counts, percent) == pytest.approx(expected)
    assert pp.top_share(counts, 100) == (1.0 if x.sum() else 0.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 5_000), min_size=2, max_size=40),
    st.lists(st.integers(-40, 40), min_size=40, max_size=40),
)
def test_noise_moves_the_figures_within_the_bound(counts: list[int], noise: list[int]) -> None:
    x = np.array(counts, dtype=float)
    e = np.array(noise[: len(counts)], dtype=float)
    noisy = x + e
    bound = pp.figure_error_bound(float(np.abs(e).sum()), float(np.maximum(noisy, 0).sum()))
    assert abs(pp.gini(noisy) - pp.gini(x)) <= bound + 1e-12
    for percent in (10, 25, 50):
        assert abs(pp.top_share(noisy, percent) - pp.top_share(x, percent)) <= bound + 1e-12


def test_noise_l1_bound_holds_for_sampled_laplace_noise() -> None:
    rng = np.random.default_rng(5)
    scale, samples = 2.0, 120
    bound = pp.noise_l1_bound(samples, scale, "laplace", failure=1e-9)
    assert samples * scale < bound < 4 * samples * scale  # above the mean, not absurdly so
    draws = np.abs(rng.laplace(0, scale, (2_000, samples))).sum(axis=1) + samples
    assert draws.max() < bound
    gaussian = pp.noise_l1_bound(samples, scale, "gaussian", failure=1e-9)
    normal = np.abs(rng.normal(0, scale, (2_000, samples))).sum(axis=1) + samples
    assert normal.max() < gaussian


# --- the proposal ------------------------------------------------------------------------------


def test_an_audit_counts_each_row_in_its_category_and_post_processes_the_release() -> None:
    proposal = parse_proposal(audit())
    table = pd.DataFrame({"item": ["news", "news", "sport", "music", "other", None, "news"]})
    records, report = run_map(proposal, table)
    assert report.rows_used == 5 and report.rows_dropped_missing == 2  # unlisted, missing
    counts = proposal.reduction().finish(proposal.reduction().contribution(records))
    assert counts.tolist() == [3, 1, 1, 0]
    assert columns_touched(proposal) == {"item"}
    figures = pp.run_postprocess(proposal, counts)
    assert [f["function"] for f in figures] == ["gini", "top_share", "baseline_ratio"]
    assert figures[0]["gini"] == pytest.approx(0.45)
    assert figures[1]["share"] == pytest.approx(0.6) and figures[1]["groups"] == 1
    assert figures[2]["ratios"] == pytest.approx(
        {"news": 2.4, "sport": 0.8, "music": 0.8, "film": 0.0}
    )


def test_one_row_moves_one_count_so_the_dp_sensitivity_is_one() -> None:
    config = parse_proposal(audit()).round_config("1")
    assert config.privacy is not None
    counts = next(g for g in config.privacy.groups if g.name == "counts")
    assert counts.sensitivity == 1.0 and counts.stop - counts.start == len(CATEGORIES)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"postprocess": [{"function": "lorenz"}]},
         "unknown post-processing function 'lorenz' (vetted: baseline_ratio, gini, top_share)"),
        ({"postprocess": [{"function": "gini", "params": {"k": 1}}]}, "gini takes no parameter"),
        ({"postprocess": [{"function": "top_share", "params": {"percent": 0}}]},
         "must be a number in (0, 100]"),
        ({"postprocess": [{"function": "top_share", "params": {"percent": "10"}}]},
         "must be a number in (0, 100]"),
        ({"postprocess": [{"function": "baseline_ratio", "params": {}}]},
         "needs the published baseline"),
        ({"postprocess": [{"function": "baseline_ratio",
                           "params": {"baseline": {"news": 1, "sport": -1}}}]},
         "shares must be positive"),
        ({"postprocess": [{"function": "baseline_ratio",
                           "params": {"baseline": {"news": 1, "tv": 1}}}]},
         "missing: film, music, sport; not a group: tv"),
        ({"reduce": {"op": "histogram", "scheme": "shamir", "threat_model": "semi-honest",
                     "bins": 3}}, "set bins to 4, not 3"),
        ({"map": {"function": "category_counts", "params": {"column": "item",
                  "categories": "a,b,a"}, "output": {"fields": []}}}, "categories repeated: a"),
        ({"map": {"function": "category_counts", "params": {"categories": "a,b"},
                  "output": {"fields": []}}}, "needs the column to group by"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused_in_one_line(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ProposalError) as caught:
        parse_proposal(audit(**changes))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_post_processing_needs_a_vector_of_counts() -> None:
    mean = audit(
        map={"function": "column_values", "params": {},
             "output": {"fields": [{"name": "x", "lo": 0, "hi": 1}]}},
        reduce={"op": "mean", "scheme": "shamir", "threat_model": "semi-honest"},
        postprocess=[{"function": "gini"}],
    )  # fmt: skip
    with pytest.raises(ProposalError, match="op 'mean' releases none: remove postprocess"):
        parse_proposal(mean)
    mean["postprocess"] = []
    parse_proposal(mean)


def test_a_sum_over_fields_post_processes_by_field_name() -> None:
    fields = [{"name": n, "lo": 0, "hi": 1, "scale": 1} for n in ("a", "b")]
    proposal = parse_proposal(
        audit(
            map={"function": "column_values", "params": {}, "output": {"fields": fields}},
            reduce={"op": "sum", "scheme": "shamir", "threat_model": "semi-honest"},
            postprocess=[{"function": "baseline_ratio", "params": {"baseline": {"a": 1, "b": 3}}}],
        )
    )
    (figures,) = pp.run_postprocess(proposal, [1.0, 1.0])
    assert figures["ratios"] == pytest.approx({"a": 2.0, "b": 2 / 3})


def test_the_result_document_and_bounty_result_carry_the_figures() -> None:
    """The aggregate kind puts the proposal's post-processing of the release in the result
    document (under `aggregate`), and `bounty result` prints one line per step."""
    from types import SimpleNamespace

    from compute.kinds import KINDS

    proposal = parse_proposal(audit())
    kind = KINDS["aggregate"]
    released = np.array([50.0, 30.0, 15.0, 5.0])
    part = kind.summary(proposal, None, SimpleNamespace(values=released))
    assert part["postprocess"] == pp.run_postprocess(proposal, released)
    lines = kind.describe({"aggregate": part})
    assert len(lines) == len(proposal.postprocess)
    assert any(line.startswith("gini(") for line in lines)
    plain = parse_proposal(audit(postprocess=[]))
    assert kind.summary(plain, None, SimpleNamespace(values=released)) == {}
