"""The registry of vetted map functions: what a provider runs over its own table.

A proposal never ships code. It names one function of `MAP_FUNCTIONS` and the columns it reads
(its output fields), and the provider's node runs that function here, over its local table (a
pandas `DataFrame` the caller loaded), in this order (`run_map`):

1. check that every column the map touches exists (`MapError` naming the missing columns and
   listing the table's), and that every value column is numeric;
2. apply the proposal's optional filter (rows whose filter column is missing never match);
3. drop the rows with a missing value in a value column, and count them;
4. shape the rest as the records `proposal.reduction().contribution(records)` takes: an
   `(m, width)` array, through `Reduction.records`, so the conversion to floats stays in
   `compute.encoding`.

Clipping to the output bounds is not done here: `Reduction.contribution` clips every value
(`FieldSpec.encode`, `FieldSpec.histogram`), and clipping twice would hide nothing but cost a
pass. `run_map` only counts the values that contribution will clip (`MapReport.values_clipped`),
so the provider can see how far its data sits outside the buyer's bounds.

| function | feeds | output fields | a record is |
|---|---|---|---|
| `column_values` | sum, mean, variance, histogram | columns read | their values |
| `row_count` | count | none | one row (its values are never read) |
| `category_counts` | histogram | none (`params.column`) | one row, in its category's bin |
| `model_probabilities` | weighted_sum | none | the holder's model's probabilities |
| `standardized_predictions` | sum | none (`prediction`) | the T predictions, standardized |
| `summed_gradient` | sum | none | the rows' summed projected gradient (valuation) |

`model_probabilities` (ensemble jobs) reads no table: the provider's node runs its own model
over the job's public evaluation set (`nodes.evalset`), so `run_map` refuses it. Nor does
`summed_gradient` (valuation jobs) run here: the provider's node computes the projected
gradients of the rows the map selects under the buyer's published model (`nodes.valuation`).

`category_counts` (counts grouped by a categorical column, the audits' group-by) reads the column
`params.column` and counts each row in the bin of its category, the categories listed, in order,
in `params.categories` (comma-separated; a name holds no comma) and one histogram bin each
(`reduce.bins` = how many are listed). A row whose category is missing or not listed is counted
in no group. The histogram's one coordinate a row moves is what keeps its DP sensitivity at 1
(a `sum` over one-hot fields would charge one per category).

`standardized_predictions` (forecast jobs) reads the column `prediction`, one row per target in
the published target order (or in the order of a `target` column, when the table has one), and
makes one record of the T predictions standardized (mean 0, population standard deviation 1; all
zeros when constant). The reduction clips them to its field's bounds; for predictions none of
which sits more than the bound's standard deviations out, the committee's score is then exactly
their Pearson correlation with the outcomes (`compute.scoring`, docs/forecast.md).

Pure: the table is passed in; nothing here reads a file.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from pandas.api import types as ptypes

from compute.errors import ComputeError
from compute.reduce import ReduceOp
from compute.scoring import standardize

if TYPE_CHECKING:
    from compute.proposal import FilterSpec, Proposal


class MapError(ComputeError, ValueError):
    """A provider's table cannot feed a proposal's map: a column is missing or not numeric, or a
    filter compares a column with a value of another kind. The message names the column and
    lists what the table has."""


MapApply = Callable[[pd.DataFrame, tuple[str, ...]], ArrayLike]
"""A map's body: the filtered, complete rows and the value columns in, records out."""

ParamApply = Callable[[pd.DataFrame, Mapping[str, Any]], ArrayLike]
"""The body of a map that its `map.params` steer: the filtered rows and the params in."""


@dataclass(frozen=True)
class MapFunction:
    """One vetted map function."""

    name: str
    description: str
    ops: frozenset[ReduceOp]
    """The reduce operations it can feed."""
    reads_fields: bool
    """Whether the proposal's output fields name columns it reads (else it takes no fields)."""
    apply: MapApply
    params: frozenset[str] = frozenset()
    """The names it accepts in `map.params`; any other is refused when a proposal is parsed."""
    param_columns: frozenset[str] = frozenset()
    """The params that name a column it reads (counted in `columns_touched`)."""
    with_params: ParamApply | None = None
    """Its body when its params steer it (then `apply` is not called)."""
    in_bounds: bool = False
    """Whether its records are always within the field's bounds (nothing to clip, so no clipped
    count is reconstructed, nor noised at the cost of half the epsilon)."""

    def run(
        self, frame: pd.DataFrame, columns: tuple[str, ...], params: Mapping[str, Any]
    ) -> ArrayLike:
        """Its records from the rows the map uses."""
        if self.with_params is not None:
            return self.with_params(frame, params)
        return self.apply(frame, columns)


def _column_values(frame: pd.DataFrame, columns: tuple[str, ...]) -> ArrayLike:
    return frame.loc[:, list(columns)].to_numpy()


def _row_count(frame: pd.DataFrame, columns: tuple[str, ...]) -> ArrayLike:
    return np.zeros((len(frame), 1))


def _no_table(frame: pd.DataFrame, columns: tuple[str, ...]) -> ArrayLike:
    raise MapError(
        "this map runs at the provider's node, not over a table here: model_probabilities runs "
        "the provider's model over the job's evaluation set (serve a model for ensemble jobs), "
        "summed_gradient the buyer's model over the rows (nodes.valuation)"
    )


def categories_of(params: Mapping[str, Any]) -> tuple[str, ...]:
    """`category_counts`'s categories, in bin order, from its `categories` param."""
    listed = params.get("categories")
    return tuple(listed.split(",")) if isinstance(listed, str) else ()


def category_problems(proposal: Proposal) -> list[tuple[tuple[str | int, ...], str]]:
    """`category_counts`'s refusals: a column to group by, unique non-empty categories, one
    histogram bin per category and no output fields (its bins are the categories)."""
    if proposal.map.function != "category_counts":
        return []
    params, out = proposal.map.params, []
    if not (isinstance(params.get("column"), str) and params["column"]):
        out.append((("map", "params", "column"), "category_counts needs the column to group by"))
    categories = categories_of(params)
    repeated = sorted({c for c in categories if categories.count(c) > 1})
    if not categories or "" in categories:
        out.append(
            (
                ("map", "params", "categories"),
                'category_counts needs its categories, comma-separated ("a,b,c"), none empty',
            )
        )
    elif repeated:
        out.append((("map", "params", "categories"), f"categories repeated: {', '.join(repeated)}"))
    elif proposal.reduce.bins != len(categories):
        out.append(
            (
                ("reduce", "bins"),
                f"category_counts has one bin per category: set bins to {len(categories)}, "
                f"not {proposal.reduce.bins}",
            )
        )
    if proposal.map.output.fields:
        out.append(
            (
                ("map", "output", "fields"),
                "category_counts counts rows per category and takes no output fields; remove them",
            )
        )
    return out


def _category_counts(frame: pd.DataFrame, params: Mapping[str, Any]) -> ArrayLike:
    column = params["column"]
    if column not in frame.columns:
        raise MapError(
            f"column {column!r} not in the data (available: {_available(frame)}); "
            "category_counts groups by it"
        )
    categories = categories_of(params)
    codes = pd.Categorical(frame[column].astype("string"), categories=list(categories)).codes
    listed = codes[codes >= 0]
    # Bin i of the histogram over [0, 1] holds (i + 0.5) / k: the middle of the bin, so no
    # rounding moves a row to its neighbour.
    return ((listed + 0.5) / len(categories)).reshape(-1, 1)


def _standardized_predictions(frame: pd.DataFrame, columns: tuple[str, ...]) -> ArrayLike:
    if "target" in frame.columns:
        frame = frame.sort_values("target", kind="stable")
    values = frame.loc[:, list(columns)].to_numpy().ravel()
    if values.size == 0:
        raise MapError("the table has no predictions (one row per published target)")
    return standardize(values).reshape(1, -1)


def _no_fields(frame: pd.DataFrame, columns: tuple[str, ...]) -> ArrayLike:
    raise MapError("category_counts runs with its params")  # `with_params` is its body


MAP_FUNCTIONS: Mapping[str, MapFunction] = {
    f.name: f
    for f in (
        MapFunction(
            "column_values",
            "the values of the output fields' numeric columns, one record per row",
            frozenset(
                {
                    ReduceOp.SUM,
                    ReduceOp.MEAN,
                    ReduceOp.VARIANCE,
                    ReduceOp.HISTOGRAM,
                }
            ),
            reads_fields=True,
            apply=_column_values,
        ),
        MapFunction(
            "model_probabilities",
            "the provider's model's class probabilities on the job's evaluation set (one record)",
            frozenset({ReduceOp.WEIGHTED_SUM}),
            reads_fields=False,
            apply=_no_table,
        ),
        MapFunction(
            "row_count",
            "one record per row (after the filter), for counting",
            frozenset({ReduceOp.COUNT}),
            reads_fields=False,
            apply=_row_count,
        ),
        MapFunction(
            "category_counts",
            "one record per row with a listed category of params.column, in its category's bin",
            frozenset({ReduceOp.HISTOGRAM}),
            reads_fields=False,
            apply=_no_fields,
            params=frozenset({"column", "categories"}),
            param_columns=frozenset({"column"}),
            with_params=_category_counts,
            in_bounds=True,
        ),
        MapFunction(
            "summed_gradient",
            "the selected rows' summed projected gradient under the buyer's model (one record)",
            frozenset({ReduceOp.SUM}),
            reads_fields=False,
            apply=_no_table,
        ),
        MapFunction(
            "standardized_predictions",
            "the prediction column's values, one per target, standardized (one record)",
            frozenset({ReduceOp.SUM}),
            reads_fields=False,
            apply=_standardized_predictions,
        ),
    )
}
"""Every vetted map function, by the name a proposal uses."""


@dataclass(frozen=True)
class MapReport:
    """What happened to the provider's rows on the way to its contribution."""

    rows_in: int
    """Rows in the table."""
    rows_after_filter: int
    """Rows the filter kept (all of them without a filter)."""
    rows_dropped_missing: int
    """Kept rows dropped for a missing value in a value column (for `category_counts`, a
    missing or unlisted category)."""
    values_clipped: int
    """Values outside their field's `[lo, hi]`, which the contribution clips to the bounds."""

    @property
    def rows_used(self) -> int:
        """Records in the contribution."""
        return self.rows_after_filter - self.rows_dropped_missing


class MapOutput(NamedTuple):
    """`run_map`'s result: the records (for `Reduction.contribution`) and the report."""

    records: NDArray[np.float64]
    report: MapReport


def value_columns(proposal: Proposal) -> tuple[str, ...]:
    """The columns whose values become records, in output-field order; for a valuation job the
    features and the label (rows missing one are not scored, nor counted)."""
    read = proposal.job_kind.columns(proposal)
    if read is not None:
        return read
    if not MAP_FUNCTIONS[proposal.map.function].reads_fields:
        return ()
    return tuple(f.name for f in proposal.map.output.fields)


def columns_touched(proposal: Proposal) -> set[str]:
    """Every column the map reads, the filter's included (for a policy's `max_columns`)."""
    touched = set(value_columns(proposal))
    for param in MAP_FUNCTIONS[proposal.map.function].param_columns:
        if isinstance(proposal.map.params.get(param), str):
            touched.add(proposal.map.params[param])
    if proposal.map.filter is not None:
        touched.add(proposal.map.filter.column)
    return touched


def select_rows(proposal: Proposal, frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Steps 1-3 of `run_map`: the rows the map uses, and how many the filter kept."""
    columns = value_columns(proposal)
    _check_columns(frame, columns, proposal)
    if proposal.map.filter is not None:
        frame = frame.loc[_filter_mask(frame, proposal.map.filter)]
    rows_after_filter = len(frame)
    if columns:
        frame = frame.dropna(subset=list(columns))
    return frame, rows_after_filter


def run_map(proposal: Proposal, frame: pd.DataFrame) -> MapOutput:
    """Run the proposal's map over a provider's table (see the module docstring)."""
    function = MAP_FUNCTIONS[proposal.map.function]
    columns = value_columns(proposal)
    rows_in = len(frame)
    frame, rows_after_filter = select_rows(proposal, frame)
    dropped = rows_after_filter - len(frame)
    reduction = proposal.reduction()
    records = reduction.records(function.run(frame, columns, proposal.map.params))
    if function.with_params is not None:  # category_counts: a row of no listed category too
        dropped = rows_after_filter - records.shape[0]
    clipped = 0
    if columns:
        spec = reduction.field
        clipped = int(np.count_nonzero((records < spec.lo) | (records > spec.hi)))
    return MapOutput(records, MapReport(rows_in, rows_after_filter, dropped, clipped))


# --- checks and the filter -----------------------------------------------------------------


def _is_numeric(series: pd.Series) -> bool:
    return bool(ptypes.is_numeric_dtype(series) and not ptypes.is_complex_dtype(series))


def _available(frame: pd.DataFrame) -> str:
    names = [str(c) for c in frame.columns]
    return ", ".join(names) if names else "no columns"


def _check_columns(frame: pd.DataFrame, columns: tuple[str, ...], proposal: Proposal) -> None:
    touched = list(columns)
    if proposal.map.filter is not None and proposal.map.filter.column not in touched:
        touched.append(proposal.map.filter.column)
    missing = [c for c in touched if c not in frame.columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise MapError(
            f"column{'s' if len(missing) > 1 else ''} {names} not in the data "
            f"(available: {_available(frame)})"
        )
    if frame.columns.duplicated().any():
        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise MapError(f"the data has duplicate column names: {', '.join(duplicated)}")
    numeric = [str(c) for c in frame.columns if _is_numeric(frame[c])]
    for column in columns:
        if not _is_numeric(frame[column]):
            raise MapError(
                f"column {column!r} holds {frame[column].dtype} values, not numbers; map "
                f"{proposal.map.function!r} needs numeric columns "
                f"(numeric here: {', '.join(numeric) or 'none'})"
            )


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not (
        isinstance(value, float) and not math.isfinite(value)
    )


def _filter_mask(frame: pd.DataFrame, spec: FilterSpec) -> pd.Series:
    """Rows the filter keeps. A missing filter value never matches (not even `!=`)."""
    column = frame[spec.column]
    values = spec.value if isinstance(spec.value, list) else [spec.value]
    numeric = _is_numeric(column)
    if not numeric and spec.op in ("<", "<=", ">", ">="):
        raise MapError(
            f"filter on column {spec.column!r}: {spec.op!r} needs a numeric column, "
            f"not {column.dtype}"
        )
    if numeric and not all(_is_number(v) for v in values):
        raise MapError(
            f"filter on column {spec.column!r}: the column holds numbers ({column.dtype}) but "
            f"the filter compares it with {spec.value!r}"
        )
    if not numeric and not all(isinstance(v, str) for v in values):
        raise MapError(
            f"filter on column {spec.column!r}: the column holds {column.dtype} values, not "
            f"numbers, but the filter compares it with {spec.value!r}"
        )
    present = column.notna()
    if spec.op == "in":
        matches = column.isin(values)
    else:
        matches = _COMPARE[spec.op](column, spec.value)
    mask: pd.Series = (present & matches.fillna(False).astype(bool)).astype(bool)
    return mask
