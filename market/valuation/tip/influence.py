"""The buyer's model, its query q, and the providers' influence scores, in NumPy.

Models (`SoftmaxRegression`, `MLP`) keep their parameters in one flat float64 vector `theta`
and give the mean cross-entropy, its gradient, and per-example gradients, all by explicit
formulas. `train` fits them by full-batch Adam on the mean loss plus `weight_decay / 2 * |theta|^2`,
deterministically from a seed.

Influence (Koh and Liang's influence function, in a random projection as TRAK/LoGra do):

- `Projection(seed, k, n_params)`: a k x p Gaussian matrix scaled by 1/sqrt(k), drawn from the
  Philox stream of `seed` by Box-Muller (NumPy guarantees raw Philox streams across versions, so
  buyer and providers rebuild the same matrix from the seed in the job);
- `build_query`: on the buyer's training set, `H = mean_i P g_i (P g_i)^T + lambda I` in the
  projected space, where the outer products are taken at the labels drawn from the model's own
  predictive distribution (the Fisher, equal to the Gauss-Newton matrix for softmax
  cross-entropy; the default) or at the observed labels (the empirical Fisher), and
  `q = H^-1 P grad L_eval`, with `grad L_eval` the gradient of the buyer's mean evaluation loss;
- `influence_scores`: a provider's `s_i = q . P g_i` for each of its examples.

Sign convention: **a positive score means the example helps**. Up-weighting training example
z by epsilon moves the optimum by `-epsilon H^-1 g_z`, which changes the evaluation loss by
`-epsilon grad L_eval^T H^-1 g_z = -epsilon s_z`: adding an example with `s_z > 0` is predicted
to *reduce* the buyer's evaluation loss. A provider's score is the sum of its examples' scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from market.valuation.tip.errors import InvalidParamsError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


# ------------------------------------------------------------------------------- models
class Model(Protocol):
    """A differentiable classifier over a flat parameter vector."""

    n_classes: int

    @property
    def n_params(self) -> int: ...

    def init(self, seed: int) -> FloatArray: ...

    def logits(self, theta: FloatArray, x: FloatArray) -> FloatArray: ...

    def losses(self, theta: FloatArray, x: FloatArray, y: IntArray) -> FloatArray: ...

    def grad(self, theta: FloatArray, x: FloatArray, y: IntArray) -> FloatArray:
        """Gradient of the mean loss over (x, y)."""
        ...

    def per_example_grads(self, theta: FloatArray, x: FloatArray, y: IntArray) -> FloatArray:
        """(n, n_params): row i is the gradient of example i's loss."""
        ...

    def spec(self) -> dict[str, Any]: ...


def _softmax(z: FloatArray) -> FloatArray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _cross_entropy(z: FloatArray, y: IntArray) -> FloatArray:
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(y)), y]


def _residual(z: FloatArray, y: IntArray) -> FloatArray:
    """d loss / d logits: softmax(z) - onehot(y)."""
    r = _softmax(z)
    r[np.arange(len(y)), y] -= 1.0
    return r


@dataclass(frozen=True)
class SoftmaxRegression:
    """Multinomial logistic regression: logits = x W + b (W: d x C)."""

    n_features: int
    n_classes: int

    @property
    def n_params(self) -> int:
        return (self.n_features + 1) * self.n_classes

    def _unpack(self, theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        d, c = self.n_features, self.n_classes
        return theta[: d * c].reshape(d, c), theta[d * c :]

    def init(self, seed: int) -> FloatArray:
        return np.zeros(self.n_params)

    def logits(self, theta: FloatArray, x: FloatArray) -> FloatArray:
        w, b = self._unpack(theta)
        return x @ w + b

    def losses(self, theta: FloatArray, x: FloatArray, y: IntArray) -> FloatArray:
        return _cross_entropy(self.logits(theta, x), y)

    def grad(self, theta: FloatArray, x: FloatArray, y: IntArray) -> FloatArray:
        r = _residual(self.logits(theta, x), y) / len(y)
        return np.concatenate([(x.T @ r).ravel(), r.sum(axis=0)])

    def per_example_grads(self, theta: FloatArray, x: FloatArray, y: IntArray) -> FloatArray:
        r = _residual(self.logits(theta, x), y)
        n = len(y)
        return np.concatenate([np.einsum("nd,nc->ndc", x, r).reshape(n, -1), r], axis=1)

    def spec(self) -> dict[str, Any]:
        return {"kind": "softmax", "n_features": self.n_features, "n_classes": self.n_classes}


@dataclass(frozen=True)
class MLP:
    """One hidden tanh layer: logits = tanh(x W1 + b1) W2 + b2."""

    n_features: int
    n_hidden: int
    n_classes: int

    @property
    def n_params(self) -> int:
        d, h, c = self.n_features, self.n_hidden, self.n_classes
        return d * h + h + h * c + c

    def _unpack(self, theta: FloatArray) -> tuple[FloatArray, ...]:
        d, h, c = self.n_features, self.n_hidden, self.n_classes
        i = 0
        w1 = theta[i : i + d * h].reshape(d, h)
        i += d * h
        b1 = theta[i : i + h]
        i += h
        w2 = theta[i : i + h * c].reshape(h, c)
        i += h * c
        return w1, b1, w2, theta[i : i + c]

    def init(self, seed: int) -> FloatArray:
        rng = np.random.Generator(np.random.Philox(seed))
        d, h, c = self.n_features, self.n_hidden, self.n_classes
        w1 = rng.standard_normal((d, h)) / np.sqrt(d)
        w2 = rng.standard_normal((h, c)) / np.sqrt(h)
        return np.concatenate([w1.ravel(), np.zeros(h), w2.ravel(), np.zeros(c)])

    def _forward(self, theta: FloatArray, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        w1, b1, w2, b2 = self._unpack(theta)
        a = np.tanh(x @ w1 + b1)
        return a, a @ w2 + b2

    def logits(self, theta: FloatArray, x: FloatArray) -> FloatArray:
        return self._forward(theta, x)[1]

    def losses(self, theta: FloatArray, x: FloatArray, y: IntArray) -> FloatArray:
        return _cross_entropy(self.logits(theta, x), y)

    def _backward(
        self, theta: FloatArray, x: FloatArray, y: IntArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        _, _, w2, _ = self._unpack(theta)
        a, z = self._forward(theta, x)
        r2 = _residual(z, y)
        r1 = (r2 @ w2.T) * (1.0 - a * a)
        return a, r1, r2

    def grad(self, theta: FloatArray, x: FloatArray, y: IntArray) -> FloatArray:
        a, r1, r2 = self._backward(theta, x, y)
        n = len(y)
        return np.concatenate(
            [(x.T @ r1).ravel() / n, r1.sum(0) / n, (a.T @ r2).ravel() / n, r2.sum(0) / n]
        )

    def per_example_grads(self, theta: FloatArray, x: FloatArray, y: IntArray) -> FloatArray:
        a, r1, r2 = self._backward(theta, x, y)
        n = len(y)
        return np.concatenate(
            [
                np.einsum("nd,nh->ndh", x, r1).reshape(n, -1),
                r1,
                np.einsum("nh,nc->nhc", a, r2).reshape(n, -1),
                r2,
            ],
            axis=1,
        )

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "mlp",
            "n_features": self.n_features,
            "n_hidden": self.n_hidden,
            "n_classes": self.n_classes,
        }


def model_from_spec(spec: dict[str, Any]) -> SoftmaxRegression | MLP:
    """Rebuild the model a job publishes (`model.spec()`)."""
    kind = spec.get("kind")
    if kind == "softmax":
        return SoftmaxRegression(int(spec["n_features"]), int(spec["n_classes"]))
    if kind == "mlp":
        return MLP(int(spec["n_features"]), int(spec["n_hidden"]), int(spec["n_classes"]))
    raise InvalidParamsError(f"unknown model kind {kind!r}; expected 'softmax' or 'mlp'")


@dataclass(frozen=True)
class TrainConfig:
    """Full-batch Adam on mean cross-entropy + weight_decay / 2 * |theta|^2."""

    steps: int = 500
    lr: float = 0.01
    weight_decay: float = 0.03
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
        }


def train(
    model: Model,
    x: FloatArray,
    y: IntArray,
    config: TrainConfig = TrainConfig(),  # noqa: B008 - frozen, so a shared default is safe
    theta0: FloatArray | None = None,
) -> FloatArray:
    """Fit `model` on (x, y); deterministic for a given config (and `theta0`)."""
    theta = model.init(config.seed) if theta0 is None else np.array(theta0, dtype=np.float64)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, config.steps + 1):
        g = model.grad(theta, x, y) + config.weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        theta = theta - config.lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def mean_loss(model: Model, theta: FloatArray, x: FloatArray, y: IntArray) -> float:
    return float(model.losses(theta, x, y).mean())


def accuracy(model: Model, theta: FloatArray, x: FloatArray, y: IntArray) -> float:
    return float((model.logits(theta, x).argmax(axis=1) == y).mean())


# ------------------------------------------------------------------------------- projection
def gaussian_matrix(seed: int, rows: int, cols: int) -> FloatArray:
    """Standard normals from the raw Philox stream of `seed`, by Box-Muller.

    Only the raw 64-bit stream of `numpy.random.Philox(seed)` is used (NumPy keeps raw bit
    generator streams stable across releases, unlike its distribution methods), so any party with
    the seed rebuilds the same matrix."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidParamsError(f"the projection seed must be a non-negative int, got {seed!r}")
    count = rows * cols
    pairs = (count + 1) // 2
    raw = np.random.Philox(seed).random_raw(2 * pairs)
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # uniform in (0, 1)
    radius = np.sqrt(-2.0 * np.log(u[0::2]))
    angle = 2.0 * np.pi * u[1::2]
    z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    return z.reshape(rows, cols)


@dataclass(frozen=True)
class Projection:
    """The job's random projection: a k x n_params Gaussian matrix scaled by 1/sqrt(k)."""

    seed: int
    k: int
    n_params: int
    _matrix: list[FloatArray] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.k < 1 or self.n_params < 1:
            raise InvalidParamsError(
                f"k and n_params must be positive, got {self.k}, {self.n_params}"
            )

    @property
    def matrix(self) -> FloatArray:
        if not self._matrix:
            self._matrix.append(gaussian_matrix(self.seed, self.k, self.n_params) / np.sqrt(self.k))
        return self._matrix[0]

    def project(self, vectors: FloatArray) -> FloatArray:
        """P v for a vector, or each row's projection for an (n, n_params) matrix."""
        return np.asarray(vectors) @ self.matrix.T

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "k": self.k,
            "n_params": self.n_params,
            "distribution": "gaussian/sqrt(k), Box-Muller over numpy.random.Philox(seed) raw",
        }


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def projected_gradients(
    model: Model,
    theta: FloatArray,
    x: FloatArray,
    y: IntArray,
    projection: Projection,
    chunk: int = 512,
) -> FloatArray:
    """(n, k): the projected per-example gradients, computed `chunk` examples at a time (the full
    per-example gradients are never held at once)."""
    if projection.n_params != model.n_params:
        raise InvalidParamsError(
            f"the projection is for {projection.n_params} parameters, the model has "
            f"{model.n_params}"
        )
    out = np.empty((len(y), projection.k))
    for part in _chunks(len(y), chunk):
        out[part] = projection.project(model.per_example_grads(theta, x[part], y[part]))
    return out


# ------------------------------------------------------------------------------- query
CURVATURES = ("gauss-newton", "empirical")


@dataclass(frozen=True)
class Query:
    """The buyer's query in the projected space; `q` is what gets encrypted."""

    q: FloatArray
    damping: float
    """The lambda added to the projected curvature (absolute)."""
    curvature: str
    curvature_trace: float

    @property
    def k(self) -> int:
        return len(self.q)


def projected_curvature(
    model: Model,
    theta: FloatArray,
    x: FloatArray,
    y: IntArray,
    projection: Projection,
    curvature: str = "gauss-newton",
) -> FloatArray:
    """(k, k) mean outer product of projected per-example gradients on (x, y).

    `gauss-newton`: the gradients are taken at every label c and weighted by the model's
    probability of c (the Fisher of the model's own predictive distribution, which for softmax
    cross-entropy is exactly the Gauss-Newton matrix). `empirical`: at the observed labels only
    (the empirical Fisher; it vanishes on examples the model already fits, so it understates the
    curvature of a confident model)."""
    if curvature == "empirical":
        g = projected_gradients(model, theta, x, y, projection)
        return g.T @ g / len(y)
    if curvature != "gauss-newton":
        raise InvalidParamsError(f"curvature must be one of {CURVATURES}, got {curvature!r}")
    probs = _softmax(model.logits(theta, x))
    total = np.zeros((projection.k, projection.k))
    for c in range(model.n_classes):
        g = projected_gradients(model, theta, x, np.full(len(x), c, dtype=np.int64), projection)
        total += (g * probs[:, c : c + 1]).T @ g
    return total / len(x)


def build_query(
    model: Model,
    theta: FloatArray,
    train_xy: tuple[FloatArray, IntArray],
    eval_xy: tuple[FloatArray, IntArray],
    projection: Projection,
    damping: float,
    curvature: str = "gauss-newton",
) -> Query:
    """`q = (F + damping I)^-1 P grad L_eval`, F the projected curvature on the buyer's training
    set (`projected_curvature`) and `grad L_eval` the gradient of its mean evaluation loss.

    A natural damping is the weight decay the model was trained with: it is the exact curvature
    of the regularizer, and `E[P^T P] = I`, so it carries over to the projected space unscaled."""
    if not damping > 0:
        raise InvalidParamsError(f"damping must be positive, got {damping}")
    fisher = projected_curvature(model, theta, *train_xy, projection, curvature)
    eval_grad = projection.project(model.grad(theta, *eval_xy))
    q = np.linalg.solve(fisher + damping * np.eye(projection.k), eval_grad)
    return Query(q=q, damping=damping, curvature=curvature, curvature_trace=float(np.trace(fisher)))


def influence_scores(g_projected: FloatArray, query: Query | FloatArray) -> FloatArray:
    """Plaintext per-example scores `s_i = q . P g_i` (positive: helps the buyer)."""
    q = query.q if isinstance(query, Query) else np.asarray(query)
    return np.asarray(g_projected) @ q


def retrain_effect(
    model: Model,
    config: TrainConfig,
    train_xy: tuple[FloatArray, IntArray],
    eval_xy: tuple[FloatArray, IntArray],
    added_xy: tuple[FloatArray, IntArray],
    base_loss: float | None = None,
) -> float:
    """The true value of adding data: the buyer's evaluation loss when trained on its own data,
    less its evaluation loss when retrained (same config and initial parameters) with `added_xy`
    appended. Positive: the added data helps, as a positive influence score predicts."""
    if base_loss is None:
        base_loss = mean_loss(model, train(model, *train_xy, config), *eval_xy)
    x = np.concatenate([train_xy[0], added_xy[0]])
    y = np.concatenate([train_xy[1], added_xy[1]])
    return base_loss - mean_loss(model, train(model, x, y, config), *eval_xy)
