"""Secure ensembling: the committee reconstructs only per-model validation statistics and the
weighted test probabilities, and matches the plaintext ensemble within the encoding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.ensemble import (
    PROB_FIELD,
    EnsembleError,
    Layout,
    contribution,
    fit_weights,
    plain_ensemble,
    secure_ensemble,
    stat_partial,
)
from compute.randomness import AesCtrRandom
from compute.reduce import combine
from compute.sharing import scheme_named

SCHEMES = [("shamir", 2), ("additive", None)]


def _probs(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    raw = rng.random((rows, classes)) ** 3
    return raw / raw.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("scheme", "threshold"), SCHEMES)
@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    models=st.integers(1, 6),
    n_val=st.integers(1, 40),
    n_test=st.integers(1, 40),
    classes=st.integers(2, 10),
)
def test_secure_matches_plain_within_the_encoding(
    scheme: str, threshold: int | None, seed: int, models: int, n_val: int, n_test: int,
    classes: int,
) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    layout = Layout(n_val, n_test, classes)
    val = {f"m{i}": _probs(rng, n_val, classes) for i in range(models)}
    test = {f"m{i}": _probs(rng, n_test, classes) for i in range(models)}
    y_val = rng.integers(0, classes, n_val)
    shares = {m: contribution(layout, val[m], test[m]) for m in val}
    committee = scheme_named(scheme, n=3, threshold=threshold)
    secure = secure_ensemble(committee, shares, layout, y_val, AesCtrRandom(seed.to_bytes(16)))
    plain = plain_ensemble(val, test, y_val, classes)
    assert secure.models == plain.models
    step = 1 / PROB_FIELD.scale
    assert np.allclose(secure.accuracy, plain.accuracy, atol=step)
    assert np.allclose(secure.weights, plain.weights, atol=1e-3)
    assert np.allclose(secure.probabilities, plain.probabilities, atol=1e-3)
    assert secure.weights.sum() == pytest.approx(1.0, abs=models / 2**16)


def test_only_the_statistics_are_reconstructed_not_a_models_outputs() -> None:
    """A node's statistic partial is one field element per model, whatever the row count."""
    layout = Layout(5, 3, 2)
    committee = scheme_named("shamir", n=3, threshold=2)
    rng = np.random.default_rng(0)
    vectors = [contribution(layout, _probs(rng, 5, 2), _probs(rng, 3, 2)) for _ in range(4)]
    shares = [committee.share(v, AesCtrRandom(bytes(16))) for v in vectors]
    columns = layout.true_label_columns([0, 1, 1, 0, 1])
    partials = {h: stat_partial(committee, np.stack([s[h - 1] for s in shares]), columns)
                for h in (1, 2, 3)}  # fmt: skip
    assert all(p.shape == (4,) for p in partials.values())
    totals = combine(committee, partials)
    assert list(totals) == [int(v[columns].sum()) for v in vectors]


def test_weights_favour_better_models_and_ignore_chance() -> None:
    weights = fit_weights([0.9, 0.6, 0.5, 0.3], classes=2)
    assert list(weights) == pytest.approx([0.4 / 0.5, 0.1 / 0.5, 0.0, 0.0])
    assert list(fit_weights([0.1, 0.2], classes=4)) == [0.5, 0.5]  # none beats chance


def test_outputs_of_the_wrong_shape_are_refused() -> None:
    layout = Layout(2, 2, 3)
    with pytest.raises(EnsembleError, match=r"must be \(2, 3\) and \(2, 3\)"):
        contribution(layout, np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(EnsembleError, match="finite"):
        contribution(layout, np.full((2, 3), np.nan), np.zeros((2, 3)))
    with pytest.raises(EnsembleError, match="validation labels in 0..2"):
        layout.true_label_columns([0, 3])
