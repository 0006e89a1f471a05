"""Real data: providers of different quality get different value, flipped labels the least,
and influence ranks providers as retraining does."""

from __future__ import annotations

import numpy as np
import pytest

from market.bench.valuation import spearman
from market.valuation.tip.data import (
    BENCH_PROVIDERS,
    DEFAULT_PROVIDERS,
    ProviderSpec,
    load,
    make_market,
)
from market.valuation.tip.errors import InvalidParamsError
from market.valuation.tip.influence import influence_scores, retrain_effect
from tests.valuation.tip.conftest import trained_buyer

CASES = [
    ("digits", "softmax"),
    ("digits", "mlp"),
    ("breast_cancer", "softmax"),
    ("breast_cancer", "mlp"),
]


def provider_scores(dataset: str, kind: str) -> dict[str, float]:
    buyer = trained_buyer(dataset, kind)
    return {
        p.name: float(influence_scores(buyer.gradients(p.name), buyer.query).sum())
        for p in buyer.market.providers
    }


@pytest.mark.parametrize(("dataset", "kind"), CASES)
def test_flipped_labels_score_lowest(dataset: str, kind: str) -> None:
    scores = provider_scores(dataset, kind)
    assert min(scores, key=scores.__getitem__) == "flipped"
    assert scores["flipped"] < 0 < scores["clean"]


@pytest.mark.parametrize(("dataset", "kind"), CASES)
def test_influence_rank_correlates_with_retraining(dataset: str, kind: str) -> None:
    buyer = trained_buyer(dataset, kind)
    m = buyer.market
    effects = {
        p.name: retrain_effect(
            buyer.model, buyer.config, m.train, m.eval, (p.x, p.y), buyer.base_loss
        )
        for p in m.providers
    }
    assert min(effects, key=effects.__getitem__) == "flipped"  # the truth agrees
    scores = provider_scores(dataset, kind)
    names = list(scores)
    assert spearman([scores[n] for n in names], [effects[n] for n in names]) > 0


def test_bundled_data_sets_load_without_download() -> None:
    x, y, classes = load("digits")
    assert x.shape == (1797, 64) and classes == 10 and y.dtype == np.int64
    x, y, classes = load("breast_cancer")
    assert x.shape == (569, 30) and classes == 2
    with pytest.raises(InvalidParamsError):
        load("mnist")


def test_market_splits_are_disjoint_and_standardized() -> None:
    m = make_market("breast_cancer", seed=1)
    assert m.notes["buyer_train"] == 85 and m.notes["buyer_eval"] == 113
    assert sum(p.size for p in m.providers) == m.notes["pool"] == 569 - 85 - 113
    np.testing.assert_allclose(m.train[0].mean(axis=0), 0.0, atol=1e-9)
    rows = [tuple(r) for r in np.concatenate([m.train[0], m.eval[0], m.provider("clean").x])]
    assert len(set(rows)) == len(rows)
    assert [p.quality for p in m.providers] == [s.quality for s in DEFAULT_PROVIDERS]


def test_qualities_degrade_as_stated() -> None:
    def second(spec: ProviderSpec):  # the same rows as a clean provider in that position
        specs = (ProviderSpec("first", "clean"), spec)
        return make_market("digits", specs, examples=2000, seed=2).providers[1]

    clean = second(ProviderSpec("x", "clean"))
    assert clean.size == 1000
    flipped = second(ProviderSpec("x", "flipped", 1.0))
    np.testing.assert_array_equal(flipped.x, clean.x)
    np.testing.assert_array_equal(flipped.y, (clean.y + 1) % 10)
    noisy = second(ProviderSpec("x", "noisy", 0.5))
    assert 0.35 < np.mean(noisy.y != clean.y) < 0.55  # half relabelled, 1 in 10 unchanged
    shifted = second(ProviderSpec("x", "shifted", 2.0))
    np.testing.assert_array_equal(shifted.y, clean.y)
    assert np.abs(shifted.x.mean(axis=0) - clean.x.mean(axis=0)).mean() > 1.0
    dup = second(ProviderSpec("x", "duplicated", 0.1))
    assert len({tuple(r) for r in dup.x}) == 100 and dup.size == 1000
    with pytest.raises(InvalidParamsError):
        ProviderSpec("x", "stolen")


def test_bench_market_has_ten_thousand_examples() -> None:
    m = make_market("digits", BENCH_PROVIDERS, examples=10_000, seed=0)
    assert sum(p.size for p in m.providers) == 10_000
    assert m.notes["jitter_std"] == 0.1
