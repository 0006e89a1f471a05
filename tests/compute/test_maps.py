"""Vetted map functions over a provider's table: filters, column checks, missing values."""

from __future__ import annotations

import ast
import operator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.maps import MAP_FUNCTIONS, MapError, columns_touched, run_map
from compute.proposal import Proposal, parse_proposal
from compute.reduce import ReduceOp
from tests.compute.test_proposal import at, chain, edit, example
from tests.compute.test_purity import FORBIDDEN, FORBIDDEN_CALLS, _imports, _module_path

FRAME = pd.DataFrame(
    {
        "x": [1.0, 5.0, -3.0, 12.0, 7.5, np.nan],
        "y": [10, 20, 30, 40, 50, 60],
        "age": [17, 18, 30, np.nan, 65, 40],
        "site": ["a", "b", "a", "c", None, "b"],
    }
)


def values_proposal(**edits: Any) -> Proposal:
    """`column_values` over x and y, bounds [0, 10], no filter; `edits` by dotted path."""
    raw = chain(
        at("map.output.fields", [{"name": n, "lo": 0, "hi": 10, "scale": 2**8} for n in "xy"]),
        at("map.filter", None),
        at("reduce.op", "sum"),
    )(example())
    for path, value in edits.items():
        raw = edit(raw, path.replace("__", "."), value)
    return parse_proposal(raw)


def count_proposal(filter_: dict[str, Any] | None = None) -> Proposal:
    return parse_proposal(
        chain(
            at("map.function", "row_count"),
            at("map.output.fields", []),
            at("reduce.op", "count"),
            at("map.filter", filter_),
        )(example())
    )


def test_registry() -> None:
    assert set(MAP_FUNCTIONS) == {
        "column_values", "model_probabilities", "row_count", "category_counts",
        "standardized_predictions",
        "summed_gradient",
    }  # fmt: skip
    assert MAP_FUNCTIONS["category_counts"].ops == {ReduceOp.HISTOGRAM}
    assert MAP_FUNCTIONS["model_probabilities"].ops == {ReduceOp.WEIGHTED_SUM}
    assert MAP_FUNCTIONS["row_count"].ops == {ReduceOp.COUNT}
    assert ReduceOp.COUNT not in MAP_FUNCTIONS["column_values"].ops
    assert all(f.name == name and f.ops for name, f in MAP_FUNCTIONS.items())


def test_column_values_without_filter() -> None:
    records, report = run_map(values_proposal(), FRAME)
    complete = FRAME.dropna(subset=["x", "y"])
    assert records.shape == (5, 2)
    np.testing.assert_array_equal(records, complete[["x", "y"]].to_numpy())  # not clipped here
    assert report.rows_in == 6 and report.rows_after_filter == 6
    assert report.rows_dropped_missing == 1 and report.rows_used == 5
    # x: -3 and 12 are outside [0, 10]; y: 20, 30, 40, 50 are above 10.
    assert report.values_clipped == 2 + 4


def test_the_contribution_clips_what_the_report_counts() -> None:
    proposal = values_proposal()
    records, report = run_map(proposal, FRAME)
    contribution = proposal.reduction().contribution(records)
    clipped = FRAME.dropna(subset=["x", "y"])[["x", "y"]].clip(0, 10)
    sums = (clipped.sum() * 2**8).round().astype(int).tolist()
    # The last word, shared with the sums, is the number of values the report counts.
    assert contribution.tolist() == [*sums, report.values_clipped]


FILTER_CASES = [
    ("==", 30, operator.eq),
    ("!=", 30, operator.ne),
    ("<", 30, operator.lt),
    ("<=", 30, operator.le),
    (">", 18.5, operator.gt),
    (">=", 18, operator.ge),
]


@pytest.mark.parametrize(("op", "value", "compare"), FILTER_CASES)
def test_numeric_filters(op: str, value: float, compare: Any) -> None:
    proposal = values_proposal(map__filter={"column": "age", "op": op, "value": value})
    records, report = run_map(proposal, FRAME)
    age = FRAME["age"]
    keep = age.notna() & compare(age, value)  # a missing age never matches, even for !=
    assert report.rows_after_filter == int(keep.sum())
    expected = FRAME[keep].dropna(subset=["x", "y"])[["x", "y"]].to_numpy()
    np.testing.assert_array_equal(records, expected.reshape(-1, 2))


def test_in_filter_on_text_and_numbers() -> None:
    text = values_proposal(map__filter={"column": "site", "op": "in", "value": ["a", "c"]})
    _, report = run_map(text, FRAME)
    assert report.rows_after_filter == 3  # a, a, c; the missing site never matches
    numbers = values_proposal(map__filter={"column": "y", "op": "in", "value": [10, 60.0, 99]})
    records, report = run_map(numbers, FRAME)
    assert report.rows_after_filter == 2 and report.rows_dropped_missing == 1
    np.testing.assert_array_equal(records, [[1.0, 10.0]])


def test_text_equality_filters_skip_missing_values() -> None:
    equal = values_proposal(map__filter={"column": "site", "op": "==", "value": "b"})
    assert run_map(equal, FRAME).report.rows_after_filter == 2
    unequal = values_proposal(map__filter={"column": "site", "op": "!=", "value": "b"})
    assert run_map(unequal, FRAME).report.rows_after_filter == 3  # not the missing one


@pytest.mark.parametrize(
    ("filter_", "text"),
    [
        ({"column": "site", "op": "<", "value": 3}, "needs a numeric column"),
        ({"column": "site", "op": "==", "value": 3}, "not numbers"),
        ({"column": "age", "op": "==", "value": "30"}, "holds numbers"),
        ({"column": "age", "op": "in", "value": ["30"]}, "holds numbers"),
    ],
)
def test_filters_that_compare_different_kinds_are_refused(
    filter_: dict[str, Any], text: str
) -> None:
    with pytest.raises(MapError, match=text):
        run_map(values_proposal(map__filter=filter_), FRAME)


def test_missing_columns_are_named_with_the_available_ones() -> None:
    proposal = values_proposal(
        map__output__fields__1__name="weight",
        map__filter={"column": "zip", "op": "==", "value": "x"},
    )
    with pytest.raises(MapError) as caught:
        run_map(proposal, FRAME)
    message = str(caught.value)
    assert "'weight', 'zip' not in the data" in message
    assert "available: x, y, age, site" in message
    assert isinstance(caught.value, ValueError)


def test_non_numeric_value_columns_are_refused() -> None:
    proposal = values_proposal(map__output__fields__1__name="site")
    with pytest.raises(MapError, match=r"column 'site' holds object values, not numbers") as c:
        run_map(proposal, FRAME)
    assert "numeric here: x, y, age" in str(c.value)
    dates = FRAME.assign(y=pd.to_datetime(["2024-01-01"] * 6))
    with pytest.raises(MapError, match="'y' holds datetime64"):
        run_map(values_proposal(), dates)


def test_duplicate_column_names_are_refused() -> None:
    frame = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["x", "y", "y"])
    with pytest.raises(MapError, match="duplicate column names: y"):
        run_map(values_proposal(), frame)


def test_missing_values_of_every_kind_are_dropped_and_counted() -> None:
    frame = pd.DataFrame(
        {
            "x": pd.array([1, None, 3, 4], dtype="Int64"),
            "y": [1.0, 2.0, np.nan, 4.0],
        }
    )
    records, report = run_map(values_proposal(), frame)
    assert report.rows_dropped_missing == 2
    np.testing.assert_array_equal(records, [[1.0, 1.0], [4.0, 4.0]])


def test_infinities_are_clipped_not_dropped() -> None:
    frame = pd.DataFrame({"x": [np.inf, -np.inf], "y": [1.0, 2.0]})
    proposal = values_proposal()
    records, report = run_map(proposal, frame)
    assert report.rows_dropped_missing == 0 and report.values_clipped == 2
    # Both clipped (and counted, in the contribution's last word).
    assert proposal.reduction().contribution(records).tolist() == [10 * 2**8, 3 * 2**8, 2]


def test_booleans_count_as_numbers() -> None:
    frame = pd.DataFrame({"x": [True, False, True], "y": [1, 2, 3]})
    records, _ = run_map(values_proposal(), frame)
    np.testing.assert_array_equal(records[:, 0], [1.0, 0.0, 1.0])


def test_row_count_counts_filtered_rows_and_reads_no_values() -> None:
    proposal = count_proposal({"column": "age", "op": ">=", "value": 18})
    records, report = run_map(proposal, FRAME)
    assert records.shape == (4, 1)  # 18, 30, 65, 40; the missing age does not match
    assert report.rows_dropped_missing == 0 and report.values_clipped == 0
    assert proposal.reduction().contribution(records).tolist() == [4]
    # Missing values elsewhere do not matter to a count.
    assert run_map(count_proposal(), FRAME).records.shape == (6, 1)


def test_histogram_records_are_one_column() -> None:
    proposal = parse_proposal(
        chain(
            at("map.output.fields", [{"name": "x", "lo": 0, "hi": 10, "scale": 1}]),
            at("map.filter", None),
            at("reduce.op", "histogram"),
            at("reduce.bins", 5),
        )(example())
    )
    records, report = run_map(proposal, FRAME)
    assert records.shape == (5, 1) and report.values_clipped == 2
    # x = 1, 5, -3 (clipped to 0), 12 (clipped to 10), 7.5 in five bins of width 2 over [0, 10],
    # then the two clipped values.
    assert proposal.reduction().contribution(records).tolist() == [2, 0, 1, 1, 1, 2]


def test_empty_tables_and_filters_that_keep_nothing() -> None:
    proposal = values_proposal(map__filter={"column": "age", "op": ">", "value": 1000})
    records, report = run_map(proposal, FRAME)
    assert records.shape == (0, 2) and report.rows_used == 0
    assert proposal.reduction().contribution(records).tolist() == [0, 0, 0]
    empty = FRAME.iloc[:0]
    assert run_map(values_proposal(), empty).records.shape == (0, 2)


def test_too_many_records_are_refused_before_sharing() -> None:
    proposal = values_proposal(reduce__max_values=3)
    with pytest.raises(ValueError, match="exceed the proposal's max_values 3"):
        run_map(proposal, FRAME)


def test_columns_touched() -> None:
    assert columns_touched(values_proposal()) == {"x", "y"}
    with_filter = values_proposal(map__filter={"column": "site", "op": "==", "value": "a"})
    assert columns_touched(with_filter) == {"x", "y", "site"}
    overlapping = values_proposal(map__filter={"column": "x", "op": ">", "value": 0})
    assert columns_touched(overlapping) == {"x", "y"}
    assert columns_touched(count_proposal()) == set()
    assert columns_touched(count_proposal({"column": "age", "op": "<", "value": 3})) == {"age"}


def test_the_frame_is_not_modified() -> None:
    before = FRAME.copy()
    run_map(values_proposal(map__filter={"column": "age", "op": ">", "value": 20}), FRAME)
    pd.testing.assert_frame_equal(FRAME, before)


cells = st.one_of(st.floats(-20, 20, allow_nan=False), st.just(np.nan), st.integers(-20, 20))


@settings(max_examples=100)
@given(
    rows=st.lists(st.tuples(cells, cells, st.integers(0, 100)), max_size=30),
    threshold=st.integers(0, 100),
)
def test_run_map_matches_a_plain_pandas_pipeline(
    rows: list[tuple[float, float, int]], threshold: int
) -> None:
    frame = pd.DataFrame(rows, columns=["x", "y", "age"]).astype(
        {"x": float, "y": float, "age": int}
    )
    proposal = values_proposal(map__filter={"column": "age", "op": "<", "value": threshold})
    records, report = run_map(proposal, frame)
    kept = frame[frame["age"] < threshold]
    complete = kept.dropna(subset=["x", "y"])[["x", "y"]]
    np.testing.assert_array_equal(records, complete.to_numpy().reshape(-1, 2))
    assert report.rows_in == len(frame) and report.rows_after_filter == len(kept)
    assert report.rows_used == len(complete)
    assert report.values_clipped == int(((complete < 0) | (complete > 10)).to_numpy().sum())


# --- purity: the same rule as tests/compute/test_purity.py, for these three modules ----------

NEW_PURE = ["proposal", "policy", "maps"]


@pytest.mark.parametrize("name", NEW_PURE)
def test_new_modules_are_pure(name: str) -> None:
    tree = ast.parse(_module_path(name).read_text())
    assert not (_imports(tree) & FORBIDDEN), _imports(tree) & FORBIDDEN
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not (calls & FORBIDDEN_CALLS)
    source = _module_path(name).read_text()
    assert "float64" not in source.replace("NDArray[np.float64]", "")
    assert "astype(float" not in source and "astype(np.float" not in source
