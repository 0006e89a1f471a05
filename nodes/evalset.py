"""Ensemble jobs at the edges of the network: the public evaluation set (the buyer publishes it,
light and heavy nodes fetch it by the URI and SHA-256 the proposal names), and what a model
holder's light node computes: its own model's class probabilities on that set, never the
model itself. The heavy nodes' side is the round (`compute.round`, with the job's
`EnsemblePlan`) and the weight-proportional payouts in `nodes.heavy`.

A model is whatever the holder serves with a scikit-learn style `predict_proba(x)` and
`classes_` (its labels, integers in 0 .. classes - 1): a fitted estimator loaded with `joblib`
from the holder's own file (`load_model`; unpickling runs code, so a node loads only the files
its operator registered, never one a job names).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from compute.ensemble import EnsembleError, Layout, align_probabilities, records
from compute.kinds import EnsembleSpec
from compute.proposal import BlobRef, Proposal
from nodes.errors import NodeError
from nodes.valuation import BlobCache, ValuationError

_ARRAYS = ("x_val", "y_val", "x_test")


class EnsembleJobError(NodeError):
    """An ensemble job step that cannot go on; the message says what to do."""


@dataclass(frozen=True, eq=False)
class EvaluationSet:
    """The public rows every model scores: validation features and labels, test features."""

    x_val: NDArray[np.float64]
    y_val: NDArray[np.int64]
    x_test: NDArray[np.float64]
    classes: int

    def __post_init__(self) -> None:
        x_val, x_test = np.asarray(self.x_val), np.asarray(self.x_test)
        y_val = np.asarray(self.y_val)
        if x_val.ndim != 2 or x_test.ndim != 2 or x_val.shape[1] != x_test.shape[1]:
            raise EnsembleJobError(
                "x_val and x_test must be (rows, features) with the same features; got "
                f"{x_val.shape} and {x_test.shape}"
            )
        if min(len(x_val), len(x_test)) < 1 or y_val.shape != (len(x_val),):
            raise EnsembleJobError(
                f"need at least one validation and one test row, and one label per validation "
                f"row; got {len(x_val)} rows, {y_val.shape[0] if y_val.ndim else 0} labels and "
                f"{len(x_test)} test rows"
            )
        if x_val.dtype.kind not in "iuf" or x_test.dtype.kind not in "iuf":
            raise EnsembleJobError("the features must be numbers")
        if not (np.all(np.isfinite(x_val)) and np.all(np.isfinite(x_test))):
            raise EnsembleJobError("the features must be finite")
        if y_val.dtype.kind not in "iu" or y_val.min() < 0 or y_val.max() >= self.classes:
            raise EnsembleJobError(f"y_val must hold integer labels 0 .. {self.classes - 1}")
        object.__setattr__(self, "x_val", x_val.astype(np.float64))
        object.__setattr__(self, "x_test", x_test.astype(np.float64))
        object.__setattr__(self, "y_val", y_val.astype(np.int64))

    @property
    def layout(self) -> Layout:
        return Layout(len(self.x_val), len(self.x_test), self.classes)

    @property
    def features(self) -> int:
        return int(self.x_val.shape[1])

    def to_bytes(self) -> bytes:
        """An `.npz` (no pickles) of `x_val`, `y_val` and `x_test`."""
        buffer = io.BytesIO()
        np.savez(buffer, x_val=self.x_val, y_val=self.y_val, x_test=self.x_test)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes, spec: EnsembleSpec) -> EvaluationSet:
        """The evaluation set a job names, checked against the shape its proposal states."""
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                if sorted(npz.files) != sorted(_ARRAYS):
                    raise EnsembleJobError(
                        f"the evaluation set holds {sorted(npz.files)}; it must hold exactly "
                        f"{list(_ARRAYS)}"
                    )
                arrays = {name: npz[name] for name in _ARRAYS}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise EnsembleJobError(f"the evaluation set is not a readable .npz: {exc}") from None
        evaluation = cls(**arrays, classes=spec.classes)
        stated = (spec.validation_rows, spec.test_rows, spec.features)
        found = (len(evaluation.x_val), len(evaluation.x_test), evaluation.features)
        if found != stated:
            raise EnsembleJobError(
                f"the evaluation set has {found[0]} validation rows, {found[1]} test rows and "
                f"{found[2]} features; the proposal states {stated[0]}, {stated[1]} and "
                f"{stated[2]}"
            )
        return evaluation

    def spec(self, uri: str) -> EnsembleSpec:
        """The proposal's ensemble terms for this set, published at `uri`."""
        raw = self.to_bytes()
        return EnsembleSpec(
            evaluation=BlobRef(uri=uri, sha256=hashlib.sha256(raw).hexdigest(), size=len(raw)),
            features=self.features,
            classes=self.classes,
            validation_rows=len(self.x_val),
            test_rows=len(self.x_test),
        )


def publish_evaluation(evaluation: EvaluationSet, storage: Any) -> EnsembleSpec:
    """Put the evaluation set in content-addressed storage (`market.storage`) and return the
    ensemble terms that name it (`ipfs://` URI, SHA-256, size)."""
    from market.storage import uri_for

    return evaluation.spec(uri_for(storage.put(evaluation.to_bytes())))


def evaluation_for(proposal: Proposal, blobs: BlobCache) -> EvaluationSet:
    """An ensemble job's evaluation set, fetched once and checked against the proposal."""
    spec = proposal.ensemble
    if spec is None:
        raise EnsembleJobError("not an ensemble job")
    try:
        raw = blobs.get(spec.evaluation)
    except ValuationError as exc:
        raise EnsembleJobError(str(exc)) from None
    return EvaluationSet.from_bytes(raw, spec)


def model_records(model: Any, evaluation: EvaluationSet) -> np.ndarray:
    """A holder's one record for an ensemble job: its model's class probabilities on the
    validation then the test rows (the model stays with its holder)."""
    if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
        raise EnsembleJobError(
            f"a {type(model).__name__} has no predict_proba and classes_; serve a fitted "
            "scikit-learn style classifier"
        )
    layout = evaluation.layout
    try:
        val = align_probabilities(model.predict_proba(evaluation.x_val), model.classes_,
                                  layout.classes)  # fmt: skip
        test = align_probabilities(model.predict_proba(evaluation.x_test), model.classes_,
                                   layout.classes)  # fmt: skip
        return records(layout, val, test)
    except EnsembleError as exc:
        raise EnsembleJobError(f"the model's output does not fit the job: {exc}") from None
    except Exception as exc:  # the holder's own model failed on the public rows
        raise EnsembleJobError(
            f"the model failed on the evaluation set ({type(exc).__name__}: {exc})"
        ) from None


def load_model(path: Path) -> Callable[[], Any]:
    """A loader for a model file its operator registered (`joblib`, as scikit-learn saves)."""

    def load() -> Any:
        import joblib

        try:
            return joblib.load(path)
        except Exception as exc:
            raise EnsembleJobError(f"cannot load the model {path}: {exc}") from None

    return load
