"""A valuation job's three sides, as bytes in and bytes out (no chain, disk or network):

- the buyer *publishes* (`publish`): the TIP terms, the model release (parameters and the
  preprocessing), the public CKKS context and `Enc(q)`; it keeps its `BuyerContext`;
- each provider *scores* its own rows (`score_rows`): standardized the buyer's way, projected
  per-example gradients, encrypted scores `Enc(G q)`; rows and gradients stay with it;
- the committee's totals (`q . G_p`, from the shared query and each provider's summed gradient,
  `compute.products`) decide the payouts; the buyer decrypts the per-row scores for its own
  view (`BuyerContext.decrypt_scores`).

Every blob is checked where it is read: the model against the terms' parameter digest, the
context and query by the backend (a context holding a secret key is refused), the labels against
the model's classes, the features against its width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from market.valuation.tip.errors import InvalidParamsError, MalformedPayloadError
from market.valuation.tip.he import BuyerContext, HEBackend, _pack, _unpack
from market.valuation.tip.influence import (
    Model,
    Projection,
    TrainConfig,
    build_query,
    projected_gradients,
)
from market.valuation.tip.job import TipTerms

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ModelRelease:
    """The model as the buyer publishes it: float64 parameters, and the per-feature mean and
    scale its inputs are standardized with (`(x - mean) / scale`)."""

    theta: FloatArray
    mean: FloatArray
    scale: FloatArray

    def to_bytes(self) -> bytes:
        arrays = [np.ascontiguousarray(a, dtype="<f8") for a in (self.theta, self.mean, self.scale)]
        header = {"kind": "model", "backend": "numpy-f8", "shapes": [len(a) for a in arrays]}
        return _pack(header, [a.tobytes() for a in arrays])

    @classmethod
    def from_bytes(cls, raw: bytes) -> ModelRelease:
        header, blobs = _unpack(raw, "model", "numpy-f8")
        shapes = header.get("shapes")
        if not isinstance(shapes, list) or len(blobs) != 3:
            raise MalformedPayloadError("a model release holds theta, mean and scale")
        arrays = []
        for blob, size in zip(blobs, shapes, strict=True):
            if len(blob) != 8 * int(size):
                raise MalformedPayloadError("a model release array has the wrong length")
            arrays.append(np.frombuffer(blob, dtype="<f8").astype(np.float64))
        theta, mean, scale = arrays
        if len(mean) != len(scale) or not np.all(np.isfinite(np.concatenate(arrays))):
            raise MalformedPayloadError("a model release has mismatched or non-finite values")
        if np.any(scale <= 0):
            raise MalformedPayloadError("a model release's scales must be positive")
        return cls(theta, mean, scale)


@dataclass(frozen=True)
class Publication:
    """What the buyer publishes with a valuation job (all public) and keeps (`buyer`)."""

    terms: TipTerms
    model: bytes
    context: bytes
    query: bytes
    buyer: BuyerContext
    """The secret side: decrypts the scores. Never published."""
    q: FloatArray | None = None
    """The query in the clear (secret): the buyer shares it with the committee."""
    gradient_scale: float = 0.0
    """The largest |coordinate| of the buyer's own per-example projected training gradients:
    a provider's summed gradient over n rows stays within n times this unless its rows are
    all as far off as the worst of the buyer's (the committee's encoding is sized by it)."""


def publish(
    model: Model,
    theta: FloatArray,
    config: TrainConfig,
    train_xy: tuple[FloatArray, NDArray[np.int64]],
    eval_xy: tuple[FloatArray, NDArray[np.int64]],
    mean: FloatArray,
    scale: FloatArray,
    *,
    k: int,
    projection_seed: int,
    backend: HEBackend,
) -> Publication:
    """The buyer's side before posting: its query `q` from its (standardized) training and
    evaluation sets, encrypted under a fresh key of `backend`."""
    terms = TipTerms.for_model(
        model, theta, config, projection_seed=projection_seed, k=k, backend=backend
    )
    projection = Projection(projection_seed, k, model.n_params)
    query = build_query(model, theta, train_xy, eval_xy, projection, terms.damping, terms.curvature)
    buyer = backend.create_buyer(k)
    gradients = projected_gradients(model, theta, *train_xy, projection)
    return Publication(
        terms=terms,
        model=ModelRelease(theta, mean, scale).to_bytes(),
        context=buyer.public_context(),
        query=buyer.encrypt_query(query.q),
        buyer=buyer,
        q=query.q,
        gradient_scale=float(np.abs(gradients).max()),
    )


def score_rows(
    terms: TipTerms,
    model_release: bytes,
    context: bytes,
    query: bytes,
    x: Any,
    y: Any,
) -> bytes:
    """A provider's encrypted scores of its rows `x` (raw features, the buyer's column order)
    and labels `y`: the payload it sends (one score per row, in row order)."""
    return score_and_sum_rows(terms, model_release, context, query, x, y)[0]


def score_and_sum_rows(
    terms: TipTerms,
    model_release: bytes,
    context: bytes,
    query: bytes,
    x: Any,
    y: Any,
) -> tuple[bytes, FloatArray]:
    """`score_rows`'s payload, and the rows' summed projected gradient `G_p` (k numbers): what
    the provider shares with the committee, whose total `q . G_p` the payouts follow."""
    release = ModelRelease.from_bytes(model_release)
    model, projection, backend = terms.rebuild(release.theta)
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y)
    if x.ndim != 2 or x.shape[1] != len(release.mean) or len(release.mean) != model.n_features:
        raise InvalidParamsError(
            f"the model takes {model.n_features} features; the rows have shape {x.shape}"
        )
    if len(labels) != len(x):
        raise InvalidParamsError(f"{len(x)} rows but {len(labels)} labels")
    if not np.all(np.isfinite(x)):
        raise InvalidParamsError("a feature value is not finite")
    bad_labels = InvalidParamsError(
        f"labels must be integers 0 to {model.n_classes - 1} (the model's classes)"
    )
    try:
        as_int = labels.astype(np.int64)
    except (TypeError, ValueError):
        raise bad_labels from None
    if labels.size and (
        not np.all(as_int == labels) or as_int.min() < 0 or as_int.max() >= model.n_classes
    ):
        raise bad_labels
    standardized = (x - release.mean) / release.scale
    gradients = projected_gradients(model, release.theta, standardized, as_int, projection)
    return backend.load_public(context).score(query, gradients), gradients.sum(axis=0)


def scores_count(payload: bytes, backend: str) -> int:
    """How many scores a provider's payload says it carries (framing only, no key needed)."""
    header, _ = _unpack(payload, "scores", backend)
    n = header.get("n")
    if not isinstance(n, int) or n < 0:
        raise MalformedPayloadError("a scores payload must state its count")
    return n
