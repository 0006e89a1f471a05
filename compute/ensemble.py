"""Secure model ensembling (the PMSR paper's second demonstration), pure.

Several model holders keep their models; each runs its model on a public evaluation set (a
validation split with public labels, and a test split) and secret-shares the class
probabilities, laid out `[validation rows x classes ; test rows x classes]`, fixed point in
`[0, 1]` (`PROB_FIELD`); on the validation rows the record holds the model's prediction
(one-hot of its most probable class, `records`). The committee never reconstructs one model's
outputs. In two linear steps over the same shares:

1. **Fit** (`stat_partial`): for each model, the sum over validation rows of its one-hot
   prediction's true-label coordinate, a linear function of its shares with public 0/1
   coefficients: the number of validation rows it gets right. Only these per-model statistics
   are reconstructed: each model's validation *accuracy* (the committee learns how good each
   model is, nothing per row). `fit_weights` maximizes the validation accuracy over the
   candidates it can evaluate from them, the simplex's vertices (each model alone): the whole
   weight goes to the most accurate model, so the ensemble is never worse than its best member
   on the validation split. A blend's validation accuracy (or log-loss, or Brier score) is not a
   linear function of the shares; evaluating one would open more than one number per model
   (docs/ensemble.md).
2. **Ensemble** (`weighted_partial`): each node's weighted sum of its test-split shares with
   the public fixed-point weights; reconstructed, that is the weighted ensemble's test
   probabilities, the only per-row output released.

The heavy nodes' round (`compute.round`, with an `EnsemblePlan` in its configuration) runs the
two steps as two exchanges after the participants are agreed; `compute.simulation.
simulate_ensemble` runs a whole committee in one process. Payouts follow the weights
(`market.valuation.payouts.split_by_weights`). `plain_ensemble` is the same computation in
floats, the baseline the secure one must match within the encoding's precision (each
probability to 2^-16, each weight to 2^-16).

Pure: arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from compute.encoding import MAX_VALUES, FieldSpec, encode_weights
from compute.errors import ComputeError
from compute.reduce import ReduceOp, Reduction
from compute.sharing import Scheme

PROB_FIELD = FieldSpec("probability", 0.0, 1.0, scale=2**16)
WEIGHT_SCALE = 2**16

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
        return (self.n_val + self.n_test) * self.classes

    @property
    def test(self) -> slice:
        return slice(self.n_val * self.classes, self.length)

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
    probable class, the first on a tie) then its test probabilities, one row (what its light node
    shares through the ensemble reduction, which clips each to [0, 1])."""
    val = np.asarray(val_probs, dtype=np.float64)
    test = np.asarray(test_probs, dtype=np.float64)
    if val.shape != (layout.n_val, layout.classes) or test.shape != (layout.n_test, layout.classes):
        raise EnsembleError(
            f"probabilities must be ({layout.n_val}, {layout.classes}) and "
            f"({layout.n_test}, {layout.classes}); got {val.shape} and {test.shape}"
        )
    if not (np.all(np.isfinite(val)) and np.all(np.isfinite(test))):
        raise EnsembleError("probabilities must be finite")
    return np.concatenate([one_hot_predictions(val).ravel(), test.ravel()])[None, :]


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


def validation_accuracy(totals: ArrayLike, n_val: int) -> FloatArray:
    """Decoded validation statistics: each model's share of validation rows predicted right."""
    return PROB_FIELD.decode(totals) / max(n_val, 1)


def fit_weights(accuracy: Sequence[float]) -> FloatArray:
    """The weights on the simplex with the best validation accuracy among those the statistics
    can evaluate, its vertices: all weight on the most accurate model (the first of those tied,
    in the participants' order). No other candidate's accuracy is known, so no blend is chosen:
    the ensemble's validation accuracy is its best member's, never less."""
    scores = np.asarray(accuracy, dtype=np.float64)
    weights = np.zeros(len(scores))
    if len(scores):
        weights[int(np.argmax(scores))] = 1.0
    return weights


def encoded_weights(weights: Sequence[float]) -> NDArray[np.int64]:
    return encode_weights(weights, WEIGHT_SCALE, 1.0)


@dataclass(frozen=True)
class EnsembleResult:
    models: tuple[str, ...]
    accuracy: FloatArray
    """Each model's validation accuracy (the only per-model figure released)."""
    weights: FloatArray
    """The fitted weights (for the secure path, as decoded from their fixed point)."""
    probabilities: FloatArray
    """The weighted ensemble's test probabilities, (n_test, classes)."""


def decode_ensemble(total: ArrayLike, layout: Layout) -> FloatArray:
    values = np.asarray(total, dtype=np.int64).astype(np.float64)
    return (values / (PROB_FIELD.scale * WEIGHT_SCALE)).reshape(layout.n_test, layout.classes)


@dataclass(frozen=True, eq=False)
class EnsembleFit:
    """What an ensemble round reconstructs (in the participants' order): each model's
    validation accuracy, the weights fitted from it, and the weighted test probabilities."""

    accuracy: FloatArray
    weights: NDArray[np.int64]
    """Fixed point at `WEIGHT_SCALE`."""
    total: NDArray[np.int64]
    """The weighted test probabilities as reconstructed integers (`decode_ensemble`)."""


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

    def fit(self, totals: ArrayLike) -> tuple[FloatArray, NDArray[np.int64]]:
        """From the reconstructed validation statistics: each model's validation accuracy and
        its fixed-point weight."""
        accuracy = validation_accuracy(totals, self.layout.n_val)
        return accuracy, encoded_weights(fit_weights(accuracy))

    def result(self, models: Sequence[str], fit: EnsembleFit) -> EnsembleResult:
        """A round's fit, decoded."""
        return EnsembleResult(
            tuple(models),
            np.asarray(fit.accuracy, dtype=np.float64),
            np.asarray(fit.weights, dtype=np.float64) / WEIGHT_SCALE,
            decode_ensemble(fit.total, self.layout),
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
    """The same fit and ensemble in floats, on the clear probabilities."""
    models = tuple(sorted(val_probs))
    y = np.asarray(y_val, dtype=np.int64)
    accuracy = np.array(
        [(np.asarray(val_probs[m], dtype=np.float64).argmax(axis=1) == y).mean() for m in models]
    )
    weights = fit_weights(accuracy)
    probabilities = sum(
        w * np.clip(np.asarray(test_probs[m], dtype=np.float64), 0, 1)
        for w, m in zip(weights, models, strict=True)
    )
    return EnsembleResult(models, accuracy, weights, np.asarray(probabilities))
