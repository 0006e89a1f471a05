"""Secure reduce: the operations a committee computes over shares, and what providers contribute.

Every supported operation is a sum in disguise. A provider's map output is a set of records
(an `(m, width)` array); its **contribution** is one integer vector of local statistics
(sums of encoded values, sums of their squares, a record count, histogram counts) that it
secret-shares. Each heavy node adds up its shares of every agreed contribution (weighting them
with public integer weights for a weighted sum) into a **partial**; the partials reconstruct
the **aggregate**, the sum of all contributions, and nothing else; `Reduction.finish` decodes it.

| op             | contribution                         | result                            |
|----------------|--------------------------------------|-----------------------------------|
| `sum`          | `sum(enc(x))` (width)                | sum per coordinate                |
| `count`        | `[m]`                                | number of records                 |
| `mean`         | `sum(enc(x))`, `m`                   | mean per coordinate               |
| `variance`     | `sum(enc(x))`, `sum(enc(x)^2)`, `m`  | population variance per coordinate |
| `histogram`    | counts of clipped values per bin     | counts per bin                    |
| `weighted_sum` | `sum(enc(x))`; weights are public    | `sum_j w_j * sum(x_j)`            |

A reduction that clips (`sum`, `mean`, `variance`, `histogram`) can also count, under the same
sharing, how many values fell outside the field's bounds (`count_clipped`, which a proposal
always sets for those ops): each contribution then ends with one more word, the provider's
number of values outside `[lo, hi]`, and the aggregate's last word is the total over the
participants (`Reduction.clipped`), reconstructed like the rest and never per provider. One
record moves it by at most `width`, its DP sensitivity (`Group("clipped")`).

`secure_reduce` runs a whole reduce over shares already received (the one-process reference
that the aggregation round in `compute.round` performs step by step over messages). Nothing
is reconstructed unless the participant minimum and the scheme's threshold are met; otherwise
the outcome is an explicit `Abort`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compute import encoding
from compute.encoding import MAX_VALUES, FieldSpec, check_headroom
from compute.errors import EncodingOverflowError, ReductionError, ShareInconsistencyError
from compute.sharing import Scheme, Shares


class ReduceOp(StrEnum):
    """The reduce operations a proposal may ask for."""

    SUM = "sum"
    COUNT = "count"
    MEAN = "mean"
    VARIANCE = "variance"
    HISTOGRAM = "histogram"
    WEIGHTED_SUM = "weighted_sum"


CLIPPING_OPS = frozenset({ReduceOp.SUM, ReduceOp.MEAN, ReduceOp.VARIANCE, ReduceOp.HISTOGRAM})
"""The operations whose contributions clip values to the field's bounds (and so may count
them: `Reduction.count_clipped`)."""


@dataclass(frozen=True)
class Group:
    """A slice of the contribution vector and how far one record can move it, in encoded units:
    by at most `bound` in each coordinate, or, when `sparse`, in one coordinate only (a record
    falls in one histogram bin). Used for the headroom check and for calibrating DP noise."""

    name: str
    start: int
    stop: int
    bound: int
    sparse: bool = False

    @property
    def width(self) -> int:
        return self.stop - self.start

    @property
    def l1(self) -> int:
        """L1 sensitivity of the slice to adding or removing one record."""
        return self.bound if self.sparse else self.width * self.bound

    @property
    def l2(self) -> float:
        """L2 sensitivity of the slice to adding or removing one record."""
        return float(self.bound) if self.sparse else math.sqrt(self.width) * self.bound


@dataclass(frozen=True)
class Reduction:
    """What to reduce and how values are encoded: the reduce part of a proposal."""

    op: ReduceOp
    """The operation."""
    field: FieldSpec
    """Bounds and scale of every value coordinate (for a histogram, its range)."""
    width: int = 1
    """Values per record (the vector length); 1 for a histogram."""
    bins: int = 0
    """Histogram only: equal-width bins over `[field.lo, field.hi]`."""
    max_values: int = MAX_VALUES
    """Most records summed over all providers together; the headroom check uses it."""
    weight_scale: int = 1 << 10
    """Weighted sum only: fixed-point scale of the public weights."""
    max_weight: float = 1.0
    """Weighted sum only: bound on the magnitude of a weight."""
    count_clipped: bool = False
    """Clipping ops only: the contribution ends with the provider's number of values outside
    `[field.lo, field.hi]`, so the aggregate carries the total (`clipped`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", ReduceOp(self.op))
        if self.count_clipped and self.op not in CLIPPING_OPS:
            raise ReductionError(f"{self.op} clips no values, so it has none to count")
        if self.width < 1 or self.max_values < 1:
            raise ReductionError(f"width and max_values must be >= 1 ({self.op})")
        if self.op is ReduceOp.HISTOGRAM and (self.bins < 1 or self.width != 1):
            raise ReductionError("a histogram needs bins >= 1 over a single field (width 1)")
        if self.op is ReduceOp.WEIGHTED_SUM and (self.weight_scale < 1 or self.max_weight <= 0):
            raise ReductionError("a weighted sum needs weight_scale >= 1 and max_weight > 0")

    @property
    def length(self) -> int:
        """Length of one contribution vector."""
        return self.groups()[-1].stop

    def groups(self) -> tuple[Group, ...]:
        """The contribution's slices, in order (the clipped count, when counted, last)."""
        groups = self._value_groups()
        if not self.count_clipped:
            return groups
        stop = groups[-1].stop
        # One record has `width` values, each of which may be clipped.
        return (*groups, Group("clipped", stop, stop + 1, self.width))

    def _value_groups(self) -> tuple[Group, ...]:
        w, bound = self.width, self.field.bound
        if self.op is ReduceOp.SUM:
            return (Group("sum", 0, w, bound),)
        if self.op is ReduceOp.WEIGHTED_SUM:
            weight = encoding.weight_bound(self.max_weight, self.weight_scale)
            return (Group("weighted_sum", 0, w, bound * weight),)
        if self.op is ReduceOp.COUNT:
            return (Group("count", 0, 1, 1),)
        if self.op is ReduceOp.MEAN:
            return (Group("sum", 0, w, bound), Group("count", w, w + 1, 1))
        if self.op is ReduceOp.VARIANCE:
            return (
                Group("sum", 0, w, bound),
                Group("squares", w, 2 * w, bound * bound),
                Group("count", 2 * w, 2 * w + 1, 1),
            )
        return (Group("counts", 0, self.bins, 1, sparse=True),)

    def check_capacity(self, capacity: int, margin: int = 0) -> None:
        """Raise `EncodingOverflowError` unless `max_values` records, plus `margin` (room kept
        for DP noise), fit every coordinate of the aggregate within `capacity`."""
        for group in self.groups():
            room = capacity - margin
            if room <= 0:
                raise EncodingOverflowError(
                    f"{self.op} of field {self.field.name!r}: noise margin {margin} leaves no "
                    f"room in capacity {capacity}; use a larger epsilon or a smaller scale"
                )
            check_headroom(
                group.bound,
                self.max_values,
                room,
                f"{self.op} ({group.name}) of {self.field.name!r}",
            )

    def records(self, values: ArrayLike) -> NDArray[np.float64]:
        """A provider's records as an `(m, width)` float array (1-D input with width 1 is m
        records; 1-D input of length `width` is one record)."""
        array = encoding.as_records(values, self.width)
        if array is None:
            raise ReductionError(
                f"records for {self.op} must have shape (m, {self.width}), got {np.shape(values)}"
            )
        if array.shape[0] > self.max_values:
            raise EncodingOverflowError(
                f"{array.shape[0]} records exceed the proposal's max_values {self.max_values}"
            )
        return array

    def contribution(self, values: ArrayLike) -> NDArray[np.int64]:
        """What a provider shares: its local statistics as an int64 vector of `length`."""
        records = self.records(values)
        statistics = self._statistics(records)
        if not self.count_clipped:
            return statistics
        outside = np.count_nonzero((records < self.field.lo) | (records > self.field.hi))
        return np.concatenate([statistics, np.array([outside], dtype=np.int64)])

    def _statistics(self, records: NDArray[np.float64]) -> NDArray[np.int64]:
        m = records.shape[0]
        if self.op is ReduceOp.COUNT:
            return np.array([m], dtype=np.int64)
        if self.op is ReduceOp.HISTOGRAM:
            return self.field.histogram(records, self.bins)
        check_headroom(self.field.bound, m, encoding.INT64_MAX, "local sum")
        encoded = self.field.encode(records)
        sums: NDArray[np.int64] = encoded.sum(axis=0, dtype=np.int64)
        if self.op in (ReduceOp.SUM, ReduceOp.WEIGHTED_SUM):
            return sums
        count = np.array([m], dtype=np.int64)
        if self.op is ReduceOp.MEAN:
            return np.concatenate([sums, count])
        check_headroom(self.field.bound**2, m, encoding.INT64_MAX, "local sum of squares")
        squares = (encoded * encoded).sum(axis=0, dtype=np.int64)
        return np.concatenate([sums, squares, count])

    def finish(self, aggregate: NDArray[np.int64]) -> NDArray[np.float64]:
        """Decode a reconstructed aggregate into the operation's result."""
        total = np.asarray(aggregate, dtype=np.int64)
        if total.shape != (self.length,):
            raise ReductionError(f"aggregate of shape {total.shape}, expected ({self.length},)")
        if self.count_clipped:
            total = total[:-1]
        w, scale = self.width, self.field.scale
        if self.op is ReduceOp.SUM:
            return self.field.decode(total)
        if self.op is ReduceOp.WEIGHTED_SUM:
            return encoding.decode_ratio(total, 1, scale * self.weight_scale)
        if self.op is ReduceOp.MEAN:
            return encoding.decode_ratio(total[:w], int(total[w]), scale)
        if self.op is ReduceOp.VARIANCE:
            return encoding.decode_variance(total[:w], total[w : 2 * w], int(total[2 * w]), scale)
        return encoding.as_float(total)

    def count(self, aggregate: NDArray[np.int64]) -> int | None:
        """The number of records in an aggregate, for the operations that carry one."""
        for group in self.groups():
            if group.name == "count":
                return int(aggregate[group.start])
        return None

    def clipped(self, aggregate: NDArray[np.int64]) -> int | None:
        """How many values of all the participants' records fell outside `[field.lo,
        field.hi]` (and were clipped to it), when the reduction counts them. With DP noise in
        the aggregate the count is noisy; it is shown no lower than 0 (post-processing)."""
        if not self.count_clipped:
            return None
        return max(int(aggregate[-1]), 0)

    def encode_weights(self, weights: Mapping[str, float]) -> dict[str, int]:
        """Public per-dataset weights as fixed-point ints (weighted sum only)."""
        ids = sorted(weights)
        encoded = encoding.encode_weights(
            [weights[i] for i in ids], self.weight_scale, self.max_weight
        )
        return {dataset: int(w) for dataset, w in zip(ids, encoded, strict=True)}


# --- over shares -----------------------------------------------------------------------------


def partial(
    scheme: Scheme, shares: NDArray[np.uint64], weights: Sequence[int] | None = None
) -> NDArray[np.uint64]:
    """A heavy node's part of the reduce: its shares of the agreed contributions (rows),
    summed, or weighted with public integer `weights` for a weighted sum."""
    if weights is None:
        return scheme.sum(shares)
    return scheme.weighted_sum(shares, weights)


_ROW_BY_ROW = 2048
"""Rows at least this long are added one at a time straight into the running total (folded
every `lazy_terms - 1` rows); shorter ones are summed as a tree (`_tree_sum`), which makes few
NumPy calls. Measured on stacks of 2 * 10^7 Shamir shares, as a ratio to a plain int64 sum of
the same stack (best of 7, interleaved, on a loaded 2-core EPYC): rows of 64, 256 and 1,000
words 2.5x, 2.3x and 2.3x as a tree, against 28x, 9.4x and 3.6x row by row (24x, 8.5x and 3.1x
in chunks of 7, the previous path); 2,000 words 2.6x and 2.7x; from 4,000 words on, row by row
wins (4,000: 1.8x against the tree's 2.4x; 16,000: 1.4x against 2.4x; 100,000: 1.3x against
2.9x): it is memory-bound like the plain sum, the folds (every 7 rows) staying in cache."""


def _tree_sum(scheme: Scheme, rows: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The sum of many short rows, reduced: groups of `lazy_terms - 1` rows summed in one call
    and folded, level by level (a folded value is at most p + 7, and 7 of them fit a uint64)."""
    group, width = scheme.lazy_terms - 1, rows.shape[1]
    while rows.shape[0] > group:
        whole = rows.shape[0] - rows.shape[0] % group
        sums = rows[:whole].reshape(-1, group, width).sum(axis=1, dtype=np.uint64)
        scheme.fold(sums)
        rows = sums if whole == rows.shape[0] else np.concatenate([sums, rows[whole:]])
    return scheme.normalize(rows.sum(axis=0, dtype=np.uint64))


class PartialSum:
    """A heavy node's running partial: shares are added as they arrive, one or many rows at a
    time, and reduced only as often as the scheme needs (folded every 7 shares for Shamir, never
    for Z_2^64), which is what keeps a streaming heavy node close to a plain sum. Seeds
    (`add_seeds`) are expanded into one reused buffer and added like shares."""

    def __init__(self, scheme: Scheme, length: int) -> None:
        self._scheme = scheme
        self._total = np.zeros(length, dtype=np.uint64)
        self._terms = 1  # reduced values the total may hold: it counts as one
        self._fold_scratch: NDArray[np.uint64] | None = None
        self._expanded: NDArray[np.uint64] | None = None

    def add(self, shares: NDArray[np.uint64]) -> None:
        """Add one share (shape `(length,)`) or a stack of them (`(k, length)`)."""
        rows = shares if shares.ndim == 2 else shares[np.newaxis]
        if rows.shape[1:] != self._total.shape:
            raise ReductionError(
                f"shares of shape {shares.shape} for a partial of length {self._total.shape[0]}"
            )
        count = rows.shape[0]
        if count == 0:
            return
        if count < self._scheme.lazy_terms:  # always for Z_2^64; up to 7 rows for Shamir
            self._add_term(rows[0] if count == 1 else rows.sum(axis=0, dtype=np.uint64), count)
        elif rows.shape[1] >= _ROW_BY_ROW:
            for row in rows:
                self._add_term(row, 1)
        else:
            self._add_term(_tree_sum(self._scheme, rows), 1)

    def add_seeds(self, seeds: Iterable[bytes]) -> None:
        """Add the shares these seeds stand for (`Scheme.seed_share`), one at a time."""
        if self._expanded is None:
            self._expanded = np.empty_like(self._total)
        for seed in seeds:
            self._add_term(self._scheme.seed_share(seed, self._total.shape, self._expanded), 1)

    def _add_term(self, term: NDArray[np.uint64], count: int) -> None:
        if self._terms + count > self._scheme.lazy_terms:
            if self._fold_scratch is None:
                self._fold_scratch = np.empty_like(self._total)
            self._scheme.fold(self._total, self._fold_scratch)
            self._terms = 1
        np.add(self._total, term, out=self._total)
        self._terms += count

    @property
    def value(self) -> NDArray[np.uint64]:
        """The partial, reduced."""
        return self._scheme.normalize(self._total.copy())


def combine(scheme: Scheme, partials: Shares) -> NDArray[np.int64]:
    """Reconstruct the aggregate from the heavy nodes' partials (checked, for Shamir)."""
    return scheme.reconstruct(partials)


class AbortReason(StrEnum):
    """Why a reduce ended without a result."""

    TOO_FEW_PARTICIPANTS = "too_few_participants"
    TOO_FEW_HEAVY_NODES = "too_few_heavy_nodes"
    INCONSISTENT_SHARES = "inconsistent_shares"
    DIVERGENT_VIEWS = "divergent_views"


@dataclass(frozen=True)
class Abort:
    """The explicit outcome of a reduce that must not reconstruct anything."""

    reason: AbortReason
    detail: str
    """What happened and what to do, for logs and the on-chain abort reason."""
    culprits: tuple[int, ...] = ()
    """Heavy nodes shown to have sent wrong partials (Shamir, enough redundancy)."""
    suspects: tuple[int, ...] = ()
    """Heavy nodes one of which sent a wrong partial, when it cannot be pinned down."""

    @property
    def culprit(self) -> int | None:
        return self.culprits[0] if len(self.culprits) == 1 else None


@dataclass(frozen=True, eq=False)
class Aggregate:
    """A reconstructed aggregate and its decoded result."""

    reduction: Reduction
    participants: tuple[str, ...]
    """Dataset ids whose contributions are in the aggregate, sorted."""
    holders: tuple[int, ...]
    """Heavy nodes whose partials were combined."""
    total: NDArray[np.int64]
    """The aggregate as integers (with DP noise, when the round added it)."""
    values: NDArray[np.float64]
    """`reduction.finish(total)`."""

    @property
    def count(self) -> int | None:
        return self.reduction.count(self.total)

    @property
    def clipped(self) -> int | None:
        """Values outside the field's bounds over all participants (`Reduction.clipped`)."""
        return self.reduction.clipped(self.total)


def inconsistency_abort(error: ShareInconsistencyError, own: int | None = None) -> Abort:
    """The abort for inconsistent partials; a node that knows its own partial is right
    (`own`) leaves itself out of the suspects."""
    suspects = tuple(h for h in error.suspects if h != own) if not error.holders else ()
    return Abort(AbortReason.INCONSISTENT_SHARES, str(error), error.holders, suspects)


def agree(views: Mapping[int, frozenset[str]]) -> tuple[str, ...]:
    """The participant set: the datasets every responding heavy node holds a share of."""
    sets = list(views.values())
    return tuple(sorted(frozenset.intersection(*sets))) if sets else ()


def secure_reduce(
    reduction: Reduction,
    scheme: Scheme,
    received: Mapping[int, Mapping[str, NDArray[np.uint64]]],
    *,
    min_participants: int,
    weights: Mapping[str, int] | None = None,
) -> Aggregate | Abort:
    """A whole reduce over the shares each responding heavy node received, by dataset id.

    The participant set is the datasets every responding node has; each node's partial is the
    (weighted) sum of its shares of them; the aggregate is reconstructed only when at least
    `min_participants` datasets and the scheme's threshold of heavy nodes take part.
    """
    reduction.check_capacity(scheme.capacity)
    if len(received) < scheme.threshold:
        return Abort(
            AbortReason.TOO_FEW_HEAVY_NODES,
            f"{len(received)} heavy nodes responded; {scheme.name} needs {scheme.threshold}",
        )
    participants = agree({node: frozenset(shares) for node, shares in received.items()})
    if len(participants) < max(min_participants, 1):
        return Abort(
            AbortReason.TOO_FEW_PARTICIPANTS,
            f"{len(participants)} datasets reached every heavy node; the proposal needs "
            f"{min_participants}",
        )
    row_weights = None if weights is None else [weights[d] for d in participants]
    partials = {
        node: partial(scheme, np.stack([shares[d] for d in participants]), row_weights)
        for node, shares in received.items()
    }
    try:
        total = combine(scheme, partials)
    except ShareInconsistencyError as error:
        return inconsistency_abort(error)
    return Aggregate(
        reduction, participants, tuple(sorted(partials)), total, reduction.finish(total)
    )
