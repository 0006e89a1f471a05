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


def test_the_budget_damping_is_the_fine_tunings_proximal_term() -> None:
    # The market's rule, unaided: lambda = 1 / (lr * T) for the budget's T steps and q / N, so
    # that q . G_p is the predicted fall of the eval loss. One full-batch step (T = 1) at a tiny
    # lr on a seller of the budget's size (the whole pool): lambda = 1 / lr dwarfs the curvature
    # and the prediction is lr * grad L_eval . G_p / N, the step SGD takes, with no hand-set
    # damping or scale. Damped by the weight decay instead, or without the / N, the influence
    # would be off by orders of magnitude.
    lr, tune = 1e-4, FineTune(lr=1e-4, batch_size=10**6)
    result = utility_fidelity(BUYERS[:1], SELLERS, (1.0,), fine_tune=tune)
    budget = result.per_buyer["digits-0"]["budget_rows"]
    assert result.per_buyer["digits-0"]["damping"] == pytest.approx(1 / lr)
    assert [r["size"] for r in result.pairs] == [budget] * len(SELLERS)
    realized = np.array([r["utility"] for r in result.pairs])
    predicted = np.array([r["influence"] for r in result.pairs])
    assert np.abs(realized).min() > 0
    np.testing.assert_allclose(predicted, realized, rtol=1e-2)

    # The damping follows the stated budget: 50 rows in batches of 32 are 2 steps per epoch.
    assert FineTune(lr=0.01, batch_size=32, epochs=3).steps(50) == 6
    assert FineTune(lr=0.01, batch_size=32, epochs=3).proximal_damping(50) == pytest.approx(
        1 / 0.06
    )
    shorter = utility_fidelity(BUYERS[:1], SELLERS[:1], (1.0,), budget_rows=32)
    assert shorter.per_buyer["digits-0"]["damping"] == pytest.approx(1 / 0.01)
    # A longer fine-tuning lets the curvature in: the budget's prediction departs from the raw
    # gradient step's, which the weight decay's never approaches.
    wd = utility_fidelity(BUYERS[:1], SELLERS[:1], (1.0,), damping="weight-decay")
    assert wd.per_buyer["digits-0"]["damping"] == pytest.approx(0.03)
    assert shorter.pairs[0]["influence"] != pytest.approx(wd.pairs[0]["influence"], rel=0.1)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(InvalidParamsError, match="fractions of the pool"):
        utility_fidelity(BUYERS[:1], SELLERS, (0.0,))
    with pytest.raises(InvalidParamsError, match="listed twice"):
        utility_fidelity((("iris", 0), ("iris", 0)), SELLERS[:1], (1.0,))
    with pytest.raises(InvalidParamsError, match="lr > 0"):
        FineTune(lr=0.0)
    with pytest.raises(InvalidParamsError, match="damping must be one of"):
        utility_fidelity(BUYERS[:1], SELLERS[:1], (1.0,), damping="retrain")
    with pytest.raises(InvalidParamsError, match="damping must be positive"):
        utility_fidelity(BUYERS[:1], SELLERS[:1], (1.0,), damping=0.0)
    with pytest.raises(InvalidParamsError, match="budget_rows"):
        utility_fidelity(BUYERS[:1], SELLERS[:1], (1.0,), budget_rows=0)
