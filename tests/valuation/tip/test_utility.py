"""Fidelity to realized utility (`tip.utility`), on a small configuration of the protocol (the
full figures are in docs/valuation.md)."""

from __future__ import annotations

import numpy as np
import pytest

from market.valuation.tip.data import ProviderSpec
from market.valuation.tip.errors import InvalidParamsError
from market.valuation.tip.utility import TIP_PUBLISHED, FineTune, utility_fidelity

BUYERS = (("digits", 0), ("breast_cancer", 0))
SELLERS = (
    ProviderSpec("clean", "clean"),
    ProviderSpec("noisy-80", "noisy", 0.8),
    ProviderSpec("flipped-100", "flipped", 1.0),
    ProviderSpec("shifted-1.5", "shifted", 1.5),
    ProviderSpec("duplicated-10", "duplicated", 0.1),
)
SIZES = (0.3, 1.0)


@pytest.fixture(scope="module")
def small():  # type: ignore[no-untyped-def]
    return utility_fidelity(BUYERS, SELLERS, SIZES)


def test_one_record_per_pair_and_influence_tracks_utility(small) -> None:  # type: ignore[no-untyped-def]
    assert len(small.pairs) == len(BUYERS) * len(SELLERS) * len(SIZES)
    assert set(small.per_buyer) == {"digits-0", "breast_cancer-0"}
    for r in small.pairs:
        assert {"buyer", "seller", "quality", "level", "size", "influence", "utility"} <= set(r)
    # Signed: a sign error in the influence or a fine-tuning that moved the wrong way would make
    # these negative; a fine-tuning that did nothing would leave the utility all zero.
    assert small.pearson > 0.5 and small.spearman > 0.5
    for figures in small.per_buyer.values():
        assert figures["spearman"] > 0.5
    by = {(r["buyer"], r["seller"]): r for r in small.pairs}
    clean, flipped = by["digits-0", "clean@1"], by["digits-0", "flipped-100@1"]
    assert clean["utility"] > 0 and clean["influence"] > 0
    assert flipped["utility"] < 0 and flipped["influence"] < 0
    out = small.to_json()
    assert out["pairs"] == len(small.pairs) and out["published"] == TIP_PUBLISHED
    assert out["protocol"]["fine_tune"]["parameters"] == "last layer"


def test_a_small_full_batch_step_is_the_influence_to_first_order() -> None:
    # One SGD step on the whole seller (one batch), tiny lr, and a damping so large that
    # q = grad L_eval / damping: the realized fall of the loss is then lr * (grad L_eval . mean g)
    # = lr * influence * damping / size, pair by pair, sign and scale.
    lr, damping = 1e-4, 1e8
    result = utility_fidelity(
        BUYERS[:1], SELLERS, SIZES, fine_tune=FineTune(lr=lr, batch_size=10**6), damping=damping
    )
    predicted = np.array([lr * r["influence"] * damping / r["size"] for r in result.pairs])
    realized = np.array([r["utility"] for r in result.pairs])
    assert np.abs(realized).min() > 0
    np.testing.assert_allclose(realized, predicted, rtol=1e-2)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(InvalidParamsError, match="fractions of the pool"):
        utility_fidelity(BUYERS[:1], SELLERS, (0.0,))
    with pytest.raises(InvalidParamsError, match="listed twice"):
        utility_fidelity((("iris", 0), ("iris", 0)), SELLERS[:1], (1.0,))
    with pytest.raises(InvalidParamsError, match="lr > 0"):
        FineTune(lr=0.0)
