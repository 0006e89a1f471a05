"""Models, projection and query: gradients by finite differences, a deterministic projection,
and the sign convention of the scores."""

from __future__ import annotations

import numpy as np
import pytest

from market.valuation.tip.errors import InvalidParamsError
from market.valuation.tip.influence import (
    MLP,
    Model,
    Projection,
    SoftmaxRegression,
    TrainConfig,
    build_query,
    gaussian_matrix,
    influence_scores,
    mean_loss,
    model_from_spec,
    projected_curvature,
    projected_gradients,
    train,
)
from tests.valuation.tip.conftest import trained_buyer

MODELS = [SoftmaxRegression(5, 3), MLP(5, 4, 3), SoftmaxRegression(4, 2)]


def _data(model: Model, n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, model.n_features))  # type: ignore[attr-defined]
    y = rng.integers(0, model.n_classes, n)
    theta = rng.standard_normal(model.n_params) * 0.5
    return x, y, theta


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.spec()["kind"])
def test_per_example_gradients_match_finite_differences(model: Model) -> None:
    x, y, theta = _data(model)
    grads = model.per_example_grads(theta, x, y)
    assert grads.shape == (len(y), model.n_params)
    eps = 1e-6
    numeric = np.empty_like(grads)
    for j in range(model.n_params):
        step = np.zeros(model.n_params)
        step[j] = eps
        numeric[:, j] = (model.losses(theta + step, x, y) - model.losses(theta - step, x, y)) / (
            2 * eps
        )
    np.testing.assert_allclose(grads, numeric, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.spec()["kind"])
def test_mean_gradient_is_the_mean_of_per_example_gradients(model: Model) -> None:
    x, y, theta = _data(model, n=9, seed=1)
    np.testing.assert_allclose(
        model.grad(theta, x, y), model.per_example_grads(theta, x, y).mean(axis=0), atol=1e-12
    )


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.spec()["kind"])
def test_model_spec_round_trips(model: Model) -> None:
    assert model_from_spec(model.spec()) == model
    with pytest.raises(InvalidParamsError):
        model_from_spec({"kind": "transformer"})


def test_training_is_deterministic_and_lowers_the_loss() -> None:
    model = MLP(5, 4, 3)
    x, y, _ = _data(model, n=40)
    config = TrainConfig(steps=200, lr=0.05, seed=3)
    a, b = train(model, x, y, config), train(model, x, y, config)
    np.testing.assert_array_equal(a, b)
    assert mean_loss(model, a, x, y) < mean_loss(model, model.init(3), x, y)


def test_projection_is_determined_by_its_seed() -> None:
    a, b = Projection(5, 64, 1000), Projection(5, 64, 1000)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert not np.array_equal(a.matrix, Projection(6, 64, 1000).matrix)
    assert a.matrix.shape == (64, 1000)
    assert abs(a.matrix.mean()) < 0.01
    assert a.matrix.var() * 64 == pytest.approx(1.0, rel=0.02)  # entries N(0, 1/k)
    # The stream is pinned (raw Philox + Box-Muller), so a provider rebuilds the same matrix
    # whatever its NumPy version.
    np.testing.assert_allclose(
        gaussian_matrix(0, 1, 4).ravel(),
        [-0.14246037277770005, 1.0293543638841094, 2.916770006665353, 0.6662016471100989],
        rtol=1e-12,
    )
    with pytest.raises(InvalidParamsError):
        gaussian_matrix(-1, 2, 2)


def test_projection_preserves_inner_products_roughly() -> None:
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(2000), rng.standard_normal(2000)
    v = v + u  # correlated
    p = Projection(1, 1024, 2000)
    assert p.project(u) @ p.project(v) == pytest.approx(u @ v, rel=0.15)


def test_projected_gradients_are_chunked_consistently() -> None:
    model = MLP(5, 4, 3)
    x, y, theta = _data(model, n=50)
    proj = Projection(2, 16, model.n_params)
    full = proj.project(model.per_example_grads(theta, x, y))
    np.testing.assert_allclose(projected_gradients(model, theta, x, y, proj, chunk=7), full)
    with pytest.raises(InvalidParamsError):
        projected_gradients(model, theta, x, y, Projection(2, 16, model.n_params + 1))


def test_gauss_newton_curvature_is_the_label_weighted_outer_product() -> None:
    model = SoftmaxRegression(4, 3)
    x, _, theta = _data(model, n=20)
    proj = Projection(4, 8, model.n_params)
    probs = np.exp(model.logits(theta, x))
    probs /= probs.sum(axis=1, keepdims=True)
    expected = np.zeros((8, 8))
    for i in range(len(x)):
        for c in range(3):
            g = proj.project(model.per_example_grads(theta, x[i : i + 1], np.array([c])))[0]
            expected += probs[i, c] * np.outer(g, g)
    got = projected_curvature(model, theta, x, np.zeros(20, dtype=np.int64), proj)
    np.testing.assert_allclose(got, expected / len(x), atol=1e-12)
    with pytest.raises(InvalidParamsError):
        projected_curvature(model, theta, x, np.zeros(20, dtype=np.int64), proj, "hessian")


def test_query_is_the_damped_solve() -> None:
    buyer = trained_buyer("breast_cancer", "softmax")
    m, proj = buyer.market, buyer.projection
    fisher = projected_curvature(buyer.model, buyer.theta, *m.train, proj)
    g_eval = proj.project(buyer.model.grad(buyer.theta, *m.eval))
    np.testing.assert_allclose(
        (fisher + buyer.query.damping * np.eye(proj.k)) @ buyer.query.q, g_eval, atol=1e-9
    )
    with pytest.raises(InvalidParamsError):
        build_query(buyer.model, buyer.theta, m.train, m.eval, proj, damping=0.0)


@pytest.mark.parametrize("kind", ["softmax", "mlp"])
def test_positive_scores_help_and_negative_scores_hurt(kind: str) -> None:
    """The sign convention: a small step down the loss of the highest-scoring example lowers
    the buyer's evaluation loss, and one on the lowest-scoring example raises it."""
    buyer = trained_buyer("digits", kind)
    model, theta, m = buyer.model, buyer.theta, buyer.market
    # With a large damping, q is proportional to the projected eval gradient (first order).
    proj = Projection(3, 1024, model.n_params)
    query = build_query(model, theta, m.train, m.eval, proj, damping=1e3)
    x = np.concatenate([p.x for p in m.providers])
    y = np.concatenate([p.y for p in m.providers])
    scores = influence_scores(projected_gradients(model, theta, x, y, proj), query)
    base = mean_loss(model, theta, *m.eval)
    for i, sign in ((int(np.argmax(scores)), -1), (int(np.argmin(scores)), 1)):
        step = model.per_example_grads(theta, x[i : i + 1], y[i : i + 1])[0]
        moved = mean_loss(model, theta - 1e-3 * step, *m.eval)
        assert np.sign(moved - base) == sign
