"""Shared fixtures: both HE backends, and trained buyers on the bundled data sets (built once)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from market.valuation.tip.data import Market, make_market
from market.valuation.tip.he import HEBackend, PlainBackend, TenSealCKKS
from market.valuation.tip.influence import (
    MLP,
    Model,
    Projection,
    Query,
    SoftmaxRegression,
    TrainConfig,
    build_query,
    mean_loss,
    projected_gradients,
    train,
)


@pytest.fixture(params=["plain", "tenseal-ckks"])
def backend(request: pytest.FixtureRequest) -> HEBackend:
    return PlainBackend() if request.param == "plain" else TenSealCKKS()


@dataclass
class Buyer:
    market: Market
    model: Model
    config: TrainConfig
    theta: np.ndarray
    projection: Projection
    query: Query
    base_loss: float

    def gradients(self, name: str) -> np.ndarray:
        p = self.market.provider(name)
        return projected_gradients(self.model, self.theta, p.x, p.y, self.projection)


_BUYERS: dict[tuple[str, str], Buyer] = {}


def trained_buyer(dataset: str, kind: str, k: int = 256) -> Buyer:
    """A buyer with the default five providers (one per quality), cached across tests."""
    key = (dataset, kind)
    if key not in _BUYERS:
        market = make_market(dataset, seed=0)
        model: Model = (
            SoftmaxRegression(market.n_features, market.n_classes)
            if kind == "softmax"
            else MLP(market.n_features, 32, market.n_classes)
        )
        config = TrainConfig()
        theta = train(model, *market.train, config)
        projection = Projection(7, k, model.n_params)
        query = build_query(
            model, theta, market.train, market.eval, projection, config.weight_decay
        )
        base = mean_loss(model, theta, *market.eval)
        _BUYERS[key] = Buyer(market, model, config, theta, projection, query, base)
    return _BUYERS[key]
