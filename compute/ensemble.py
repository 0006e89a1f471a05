"""Secure model ensembling (the PMSR paper's second demonstration), pure.

Several model holders keep their models; each runs its model on a public evaluation set (a
validation split with public labels, and a test split) and secret-shares one record, laid out
`[validation rows x classes (prediction) ; validation rows x classes ; test rows x classes]`,
fixed point in `[0, 1]` (`PROB_FIELD`): its prediction on the validation rows (one-hot of its
most probable class), its probabilities on the validation rows, its probabilities on the test
rows (`records`). The committee never reconstructs one model's outputs. In three linear steps
over the same shares:

1. **Statistics** (`stat_partial`): for each model, the sum over validation rows of its one-hot
   prediction's true-label coordinate, a linear function of its shares with public 0/1
   coefficients: the number of validation rows it gets right. Reconstructed, each model's
   validation *accuracy* (the committee learns how good each model is, nothing per row).
2. **Candidates** (`blend_weights`, `blend_partial`, `select`): the best model alone
   (`fit_weights`) is always a candidate. Beside it at most `blend_slots(M)` <= M - 1 blends
   whose weights are public functions of the opened accuracies (proportional to the accuracy
   above chance raised to each of `BLEND_POWERS`); a blend whose weights, with the earlier
   ones, would span one model's outputs is not evaluated. For each blend the committee
   reconstructs its validation probabilities (a weighted sum of the shares with the public
   weights), and so its validation accuracy (the labels are public). The candidate with the
   best validation accuracy is chosen, ties to the best model alone, then to the earlier
   blend: the ensemble is never worse than its best member on the validation split.
3. **Ensemble** (`weighted_partial`): each node's weighted sum of its test-split shares with
   the chosen fixed-point weights; reconstructed, that is the ensemble's test probabilities,
   the only per-row output released beyond the committee.

Every step is integer arithmetic on reconstructed values (weights rounded exactly from
fractions), so every honest member computes the same candidates and the same choice.

The heavy nodes' round (`compute.round`, with an `EnsemblePlan` in its configuration) runs the
steps as exchanges after the participants are agreed; `compute.simulation.simulate_ensemble`
runs a whole committee in one process. Payouts follow the weights
(`market.valuation.payouts.split_by_weights`). `plain_ensemble` is the same computation on the
clear probabilities (the same fixed point, so the same choice), the baseline the secure one must
match within the encoding's precision (each probability to 2^-16, each weight to 2^-16).

Pure: arrays in, arrays out. docs/ensemble.md says what each step opens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compute.encoding import MAX_VALUES, FieldSpec, encode_weights
from compute.errors import ComputeError
from compute.reduce import ReduceOp, Reduction
from compute.sharing import Scheme

PROB_FIELD = FieldSpec("probability", 0.0, 1.0, scale=2**16)
WEIGHT_SCALE = 2**16

BLEND_POWERS: Final = (16, 4, 1)
"""The candidate blends, in order: weights proportional to each model's validation accuracy
above chance (1 / classes) raised to each power, from the most conservative (16: close to the
best model alone) to the broadest (1). An ensemble of M models evaluates the first M - 1."""

BEST_MODEL = "best model"

FloatArray = NDArray[np.float64]


class EnsembleError(ComputeError, ValueError):
    """Model outputs that do not fit the job's evaluation set."""


@dataclass(frozen=True)
class Layout:
    """Where a model's probabilities sit in its shared vector."""

    n_val: int
    n_test: int
    classes: int

    @property
    def length(self) -> int:
        return (2 * self.n_val + self.n_test) * self.classes

    @property
    def validation(self) -> slice:
        """The validation probabilities (after the validation predictions)."""
        return slice(self.n_val * self.classes, 2 * self.n_val * self.classes)

    @property
    def test(self) -> slice:
        return slice(2 * self.n_val * self.classes, self.length)

    def reduction(self, max_models: int = MAX_VALUES) -> Reduction:
        """The reduce a model holder's contribution goes through: one record per model, its
        probabilities at `PROB_FIELD`, weighted at `WEIGHT_SCALE` (weights at most 1)."""
        return Reduction(
            ReduceOp.WEIGHTED_SUM,
            PROB_FIELD,
            width=self.length,
            max_values=max_models,
            weight_scale=WEIGHT_SCALE,
            max_weight=1.0,
        )

    def true_label_columns(self, y_val: ArrayLike) -> NDArray[np.int64]:
        """The coordinates of the validation rows' true-label probabilities."""
        y = np.asarray(y_val, dtype=np.int64)
        if y.shape != (self.n_val,) or (y.size and (y.min() < 0 or y.max() >= self.classes)):
            raise EnsembleError(f"need {self.n_val} validation labels in 0..{self.classes - 1}")
        return np.arange(self.n_val, dtype=np.int64) * self.classes + y


def records(layout: Layout, val_probs: ArrayLike, test_probs: ArrayLike) -> FloatArray:
    """A model holder's one record: its predictions on the validation rows (one-hot of the most
    probable class, the first on a tie), its validation probabilities, then its test
    probabilities, one row (what its light node shares through the ensemble reduction, which
    clips each to [0, 1])."""
    val = np.asarray(val_probs, dtype=np.float64)
    test = np.asarray(test_probs, dtype=np.float64)
    if val.shape != (layout.n_val, layout.classes) or test.shape != (layout.n_test, layout.classes):
        raise EnsembleError(
            f"probabilities must be ({layout.n_val}, {layout.classes}) and "
            f"({layout.n_test}, {layout.classes}); got {val.shape} and {test.shape}"
        )
    if not (np.all(np.isfinite(val)) and np.all(np.isfinite(test))):
        raise EnsembleError("probabilities must be finite")
    return np.concatenate([one_hot_predictions(val).ravel(), val.ravel(), test.ravel()])[None, :]


def one_hot_predictions(probabilities: ArrayLike) -> FloatArray:
    """Each row's most probable class (the first on a tie), one-hot."""
    proba = np.asarray(probabilities, dtype=np.float64)
    out = np.zeros_like(proba)
    if proba.size:
        out[np.arange(len(proba)), proba.argmax(axis=1)] = 1.0
    return out


def stat_partial(
    scheme: Scheme, rows: NDArray[np.uint64], columns: NDArray[np.int64]
) -> NDArray[np.uint64]:
    """One node's shares of each model's validation statistic: `rows` holds its shares of the
    models' vectors (one row per model, participants' order)."""
    return scheme.sum(np.ascontiguousarray(rows[:, columns].T))


def weighted_partial(
    scheme: Scheme, rows: NDArray[np.uint64], layout: Layout, weights: Sequence[int]
) -> NDArray[np.uint64]:
    """One node's share of the weighted ensemble's test probabilities."""
    return scheme.weighted_sum(np.ascontiguousarray(rows[:, layout.test]), weights)


def blend_partial(
    scheme: Scheme,
    rows: NDArray[np.uint64],
    layout: Layout,
    blends: Sequence[NDArray[np.int64]],
) -> NDArray[np.uint64]:
    """One node's shares of each candidate blend's validation probabilities (`blend_weights`'
    slots, each weight vector cut to these rows' models), one after the other."""
    validation = np.ascontiguousarray(rows[:, layout.validation])
    width = layout.n_val * layout.classes
    if not blends:
        return np.zeros(0, dtype=np.uint64)
    return np.concatenate([
        scheme.weighted_sum(validation, w) if np.any(w) else np.zeros(width, dtype=np.uint64)
        for w in blends
    ])  # fmt: skip


def validation_accuracy(totals: ArrayLike, n_val: int) -> FloatArray:
    """Decoded validation statistics: each model's share of validation rows predicted right."""
    return PROB_FIELD.decode(totals) / max(n_val, 1)


def fit_weights(accuracy: Sequence[float]) -> FloatArray:
    """The best model alone, the first candidate: all weight on the most accurate model (the
    first of those tied, in the participants' order)."""
    scores = np.asarray(accuracy, dtype=np.float64)
    weights = np.zeros(len(scores))
    if len(scores):
        weights[int(np.argmax(scores))] = 1.0
    return weights


def encoded_weights(weights: Sequence[float]) -> NDArray[np.int64]:
    return encode_weights(weights, WEIGHT_SCALE, 1.0)


def blend_slots(models: int) -> int:
    """How many candidate blends an ensemble of `models` models evaluates (whatever their
    accuracies, so every message's length is known beforehand): one fewer than the models, at
    most `len(BLEND_POWERS)`. None for one model."""
    return max(0, min(len(BLEND_POWERS), models - 1))


def blend_name(power: int) -> str:
    return f"(accuracy - chance)^{power}"


def blend_weights(totals: ArrayLike, layout: Layout) -> tuple[NDArray[np.int64], ...]:
    """The candidate blends' fixed-point weights, one per slot (`blend_slots`), computed
    exactly from the reconstructed validation statistics `totals` (integers, so every member
    gets the same weights): weights proportional to each model's accuracy above chance raised
    to `BLEND_POWERS[slot]`, rounded to `WEIGHT_SCALE` (half to even, from exact fractions).

    A slot holds zeros (nothing is opened for it, the blend is not a candidate) when no model is
    above chance, when its weights repeat an earlier blend's, or when its weights and the
    earlier blends' span one model's weight vector (a unit vector): then a linear combination of
    the opened validation probabilities would be that model's own."""
    counts = [int(t) for t in np.asarray(totals, dtype=np.int64)]
    above = [max(0, layout.classes * c - PROB_FIELD.scale * layout.n_val) for c in counts]
    opened: list[list[int]] = []
    slots = []
    for power in BLEND_POWERS[: blend_slots(len(counts))]:
        powered = [a**power for a in above]
        whole = sum(powered)
        weights = [round(Fraction(WEIGHT_SCALE * p, whole)) for p in powered] if whole else []
        if whole and weights not in opened and not _spans_a_unit_vector([*opened, weights]):
            opened.append(weights)
            slots.append(np.array(weights, dtype=np.int64))
        else:
            slots.append(np.zeros(len(counts), dtype=np.int64))
    return tuple(slots)


def _spans_a_unit_vector(rows: Sequence[Sequence[int]]) -> bool:
    """Whether the rows' span holds a unit vector: exactly when a row of their reduced row
    echelon form has one nonzero entry (exact, over fractions)."""
    matrix = [[Fraction(v) for v in row] for row in rows]
    width = len(matrix[0]) if matrix else 0
    pivot_row = 0
    for col in range(width):
        pivot = next((r for r in range(pivot_row, len(matrix)) if matrix[r][col]), None)
        if pivot is None:
            continue
        matrix[pivot_row], matrix[pivot] = matrix[pivot], matrix[pivot_row]
        lead = matrix[pivot_row][col]
        matrix[pivot_row] = [v / lead for v in matrix[pivot_row]]
        for r in range(len(matrix)):
            if r != pivot_row and matrix[r][col]:
                factor = matrix[r][col]
                matrix[r] = [
                    a - factor * b for a, b in zip(matrix[r], matrix[pivot_row], strict=True)
                ]
        pivot_row += 1
    return any(sum(1 for v in row if v) == 1 for row in matrix)


def blend_correct(total: ArrayLike, layout: Layout, y_val: ArrayLike) -> int:
    """Validation rows a blend gets right, from its reconstructed validation probabilities
    (fixed point, row by row): the most probable class (the first on a tie) is the label."""
    values = np.asarray(total, dtype=np.int64).reshape(layout.n_val, layout.classes)
    return int((values.argmax(axis=1) == np.asarray(y_val)).sum()) if values.size else 0


@dataclass(frozen=True, eq=False)
class Candidate:
    """One candidate ensemble: its name, its fixed-point weights (participants' order) and its
    validation accuracy."""

    name: str
    weights: NDArray[np.int64]
    accuracy: float


def select(
    totals: ArrayLike,
    blends: Sequence[NDArray[np.int64]],
    blend_totals: ArrayLike,
    layout: Layout,
    y_val: ArrayLike,
) -> tuple[tuple[Candidate, ...], int]:
    """The candidates (the best model alone first, then each evaluated blend) and the index of
    the chosen one: the best validation accuracy, compared exactly; a tie goes to the best model
    alone, then to the earlier blend."""
    counts = np.asarray(totals, dtype=np.int64)
    n_val = layout.n_val
    accuracy = validation_accuracy(counts, n_val)
    best = int(np.argmax(counts)) if counts.size else 0
    vertex = np.zeros(len(counts), dtype=np.int64)
    if counts.size:
        vertex[best] = WEIGHT_SCALE
    scores = [Fraction(int(counts[best]) if counts.size else 0, PROB_FIELD.scale * max(n_val, 1))]
    candidates = [Candidate(BEST_MODEL, vertex, float(accuracy[best]) if counts.size else 0.0)]
    width = n_val * layout.classes
    opened = np.asarray(blend_totals, dtype=np.int64).reshape(len(blends), width)
    for power, weights, total in zip(BLEND_POWERS, blends, opened, strict=False):
        if not np.any(weights):
            continue
        correct = blend_correct(total, layout, y_val)
        scores.append(Fraction(correct, max(n_val, 1)))
        candidates.append(Candidate(blend_name(power), weights, correct / max(n_val, 1)))
    chosen = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return tuple(candidates), chosen


@dataclass(frozen=True)
class EnsembleResult:
    models: tuple[str, ...]
    accuracy: FloatArray
    """Each model's validation accuracy."""
    weights: FloatArray
    """The chosen candidate's weights (for the secure path, as decoded from their fixed
    point)."""
    probabilities: FloatArray
    """The weighted ensemble's test probabilities, (n_test, classes)."""
    candidates: tuple[Candidate, ...] = ()
    """Every candidate evaluated, the best model alone first."""
    chosen: int = 0
    """The index of the chosen candidate."""


def decode_ensemble(total: ArrayLike, layout: Layout) -> FloatArray:
    values = np.asarray(total, dtype=np.int64).astype(np.float64)
    return (values / (PROB_FIELD.scale * WEIGHT_SCALE)).reshape(layout.n_test, layout.classes)


@dataclass(frozen=True, eq=False)
class EnsembleFit:
    """What an ensemble round reconstructs (in the participants' order): each model's
    validation accuracy, the chosen weights, the weighted test probabilities, and the
    candidates evaluated."""

    accuracy: FloatArray
    weights: NDArray[np.int64]
    """Fixed point at `WEIGHT_SCALE`."""
    total: NDArray[np.int64]
    """The weighted test probabilities as reconstructed integers (`decode_ensemble`)."""
    candidates: tuple[Candidate, ...] = ()
    chosen: int = 0


@dataclass(frozen=True, eq=False)
class Selection:
    """The fit before the test probabilities: each model's validation accuracy, the
    candidates evaluated, the chosen one."""

    accuracy: FloatArray
    candidates: tuple[Candidate, ...]
    chosen: int

    @property
    def weights(self) -> NDArray[np.int64]:
        return self.candidates[self.chosen].weights

    def fit(self, total: NDArray[np.int64]) -> EnsembleFit:
        return EnsembleFit(self.accuracy, self.weights, total, self.candidates, self.chosen)


@dataclass(frozen=True, eq=False)
class EnsemblePlan:
    """What an ensemble round's heavy nodes know beforehand (from the job's public evaluation
    set): where each model's probabilities sit, and the validation labels."""

    layout: Layout
    y_val: NDArray[np.int64]
    columns: NDArray[np.int64] = field(init=False, repr=False)
    """The coordinates of the validation rows' true-label probabilities."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", self.layout.true_label_columns(self.y_val))

    def blend_length(self, models: int) -> int:
        """The length of a node's shares of the blends' validation probabilities."""
        return blend_slots(models) * self.layout.n_val * self.layout.classes

    def blends(self, totals: ArrayLike) -> tuple[NDArray[np.int64], ...]:
        """From the reconstructed validation statistics: the candidate blends' weights."""
        return blend_weights(totals, self.layout)

    def select(
        self,
        totals: ArrayLike,
        blends: Sequence[NDArray[np.int64]] = (),
        blend_totals: ArrayLike = (),
    ) -> Selection:
        """From the reconstructed statistics and blends: the candidates and the choice."""
        candidates, chosen = select(totals, blends, blend_totals, self.layout, self.y_val)
        return Selection(validation_accuracy(totals, self.layout.n_val), candidates, chosen)

    def result(self, models: Sequence[str], fit: EnsembleFit) -> EnsembleResult:
        """A round's fit, decoded."""
        return EnsembleResult(
            tuple(models),
            np.asarray(fit.accuracy, dtype=np.float64),
            np.asarray(fit.weights, dtype=np.float64) / WEIGHT_SCALE,
            decode_ensemble(fit.total, self.layout),
            fit.candidates,
            fit.chosen,
        )


def align_probabilities(
    probabilities: ArrayLike, model_classes: ArrayLike, classes: int
) -> FloatArray:
    """A model's `predict_proba` output (columns in the order of its `classes_`) as columns
    0 .. classes - 1; a class the model never saw gets probability 0."""
    proba = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(model_classes)
    if proba.ndim != 2 or proba.shape[1] != labels.size:
        raise EnsembleError(
            f"the model gave probabilities of shape {proba.shape} for {labels.size} classes"
        )
    if labels.dtype.kind not in "iu" and not (
        labels.dtype.kind == "f" and np.all(labels == np.round(labels))
    ):
        raise EnsembleError(f"the model's classes must be integer labels, not {labels.dtype}")
    index = labels.astype(np.int64)
    if index.size and (index.min() < 0 or index.max() >= classes):
        raise EnsembleError(
            f"the model's classes {sorted(set(index.tolist()))} are not all in 0..{classes - 1}"
        )
    if len(set(index.tolist())) != index.size:
        raise EnsembleError("the model lists a class twice")
    out = np.zeros((proba.shape[0], classes), dtype=np.float64)
    out[:, index] = proba
    return out


def plain_ensemble(
    val_probs: Mapping[str, ArrayLike],
    test_probs: Mapping[str, ArrayLike],
    y_val: ArrayLike,
    classes: int,
) -> EnsembleResult:
    """The same fit and ensemble on the clear probabilities: the candidates evaluated in the
    same fixed point as under sharing (so the same choice), the ensemble in floats."""
    models = tuple(sorted(val_probs))
    y = np.asarray(y_val, dtype=np.int64)
    val = {m: np.asarray(val_probs[m], dtype=np.float64) for m in models}
    layout = Layout(len(y), 0, classes)
    totals = np.array(
        [int((val[m].argmax(axis=1) == y).sum()) * PROB_FIELD.scale for m in models],
        dtype=np.int64,
    ).reshape(len(models))
    blends = blend_weights(totals, layout)
    encoded = np.stack([PROB_FIELD.encode(val[m]).ravel() for m in models]) if models else None
    blend_totals = [np.zeros(0, dtype=np.int64) if encoded is None else w @ encoded for w in blends]
    candidates, chosen = select(
        totals, blends, np.concatenate([np.zeros(0, dtype=np.int64), *blend_totals]), layout, y
    )
    weights = np.asarray(candidates[chosen].weights, dtype=np.float64) / WEIGHT_SCALE
    probabilities = sum(
        w * np.clip(np.asarray(test_probs[m], dtype=np.float64), 0, 1)
        for w, m in zip(weights, models, strict=True)
    )
    return EnsembleResult(
        models,
        validation_accuracy(totals, len(y)),
        weights,
        np.asarray(probabilities),
        candidates,
        chosen,
    )
