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
    EnsemblePlan,
    Layout,
    align_probabilities,
    fit_weights,
    plain_ensemble,
    records,
    stat_partial,
)
from compute.errors import ProtocolError, ReductionError
from compute.messages import PeerUnavailable, RoundConfig, Statistic
from compute.randomness import AesCtrRandom
from compute.reduce import Abort, AbortReason, combine
from compute.round import HeavyNodeRound, Phase
from compute.sharing import scheme_named
from compute.simulation import Faults, simulate_ensemble, simulate_round

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
    rows = {m: records(layout, val[m], test[m]) for m in val}
    committee = scheme_named(scheme, n=3, threshold=threshold)
    plan = EnsemblePlan(layout, y_val)
    secure = simulate_ensemble(committee, rows, plan, AesCtrRandom(seed.to_bytes(16)))
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
    reduction = layout.reduction()
    vectors = [reduction.contribution(records(layout, _probs(rng, 5, 2), _probs(rng, 3, 2)))
               for _ in range(4)]  # fmt: skip
    shares = [committee.share(v, AesCtrRandom(bytes(16))) for v in vectors]
    columns = layout.true_label_columns([0, 1, 1, 0, 1])
    partials = {h: stat_partial(committee, np.stack([s[h - 1] for s in shares]), columns)
                for h in (1, 2, 3)}  # fmt: skip
    assert all(p.shape == (4,) for p in partials.values())
    totals = combine(committee, partials)
    assert list(totals) == [int(v[columns].sum()) for v in vectors]


def test_the_weights_are_the_most_accurate_vertex() -> None:
    assert list(fit_weights([0.6, 0.9, 0.5, 0.3])) == [0.0, 1.0, 0.0, 0.0]
    assert list(fit_weights([0.7, 0.9, 0.9])) == [0.0, 1.0, 0.0]  # a tie: the first
    assert list(fit_weights([0.1, 0.05])) == [1.0, 0.0]  # below chance: still the best


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


@pytest.mark.parametrize(("scheme", "threshold"), SCHEMES)
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    models=st.integers(1, 6),
    n_val=st.integers(1, 30),
    classes=st.integers(2, 6),
)
def test_the_fitted_ensemble_is_never_worse_than_its_best_model_on_validation(
    scheme: str, threshold: int | None, seed: int, models: int, n_val: int, classes: int
) -> None:
    """The committee's fit, under sharing: the validation accuracy of the weighted ensemble of
    the models' validation probabilities is at least the best single model's."""
    rng = np.random.default_rng(seed)
    layout = Layout(n_val, n_val, classes)
    val = {f"m{i}": _probs(rng, n_val, classes) for i in range(models)}
    y_val = rng.integers(0, classes, n_val)
    rows = {m: records(layout, val[m], val[m]) for m in val}  # test rows = validation rows
    committee = scheme_named(scheme, n=3, threshold=threshold)
    plan = EnsemblePlan(layout, y_val)
    secure = simulate_ensemble(committee, rows, plan, AesCtrRandom(bytes(16)))
    best = max(_accuracy(val[m], y_val) for m in val)
    assert _accuracy(secure.probabilities, y_val) >= best
    assert list(secure.accuracy) == pytest.approx([_accuracy(val[m], y_val) for m in sorted(val)])


def test_a_record_holds_predictions_on_validation_and_probabilities_on_test() -> None:
    layout = Layout(2, 1, 3)
    row = records(layout, [[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]], [[0.1, 0.6, 0.3]])
    assert list(row[0]) == [0, 1, 0, 1, 0, 0, 0.1, 0.6, 0.3]


def test_outputs_of_the_wrong_shape_are_refused() -> None:
    layout = Layout(2, 2, 3)
    with pytest.raises(EnsembleError, match=r"must be \(2, 3\) and \(2, 3\)"):
        records(layout, np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(EnsembleError, match="finite"):
        records(layout, np.full((2, 3), np.nan), np.zeros((2, 3)))
    with pytest.raises(EnsembleError, match="validation labels in 0..2"):
        layout.true_label_columns([0, 3])


def _plan_and_rows(models: int = 4, seed: int = 1) -> tuple[EnsemblePlan, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    layout = Layout(12, 7, 3)
    plan = EnsemblePlan(layout, rng.integers(0, 3, 12))
    rows = {
        f"0x{i:02x}": records(layout, _probs(rng, 12, 3), _probs(rng, 7, 3)) for i in range(models)
    }
    return plan, rows


def test_the_round_survives_a_missing_heavy_node() -> None:
    plan, rows = _plan_and_rows()
    shamir = scheme_named("shamir", n=3, threshold=2)
    full = simulate_ensemble(shamir, rows, plan, AesCtrRandom(bytes(16)))
    for offline in (1, 2, 3):
        missing = simulate_ensemble(
            shamir, rows, plan, AesCtrRandom(bytes(16)), faults=Faults(offline=frozenset({offline}))
        )
        assert np.array_equal(missing.probabilities, full.probabilities)
        assert np.array_equal(missing.weights, full.weights)


def test_a_heavy_node_that_alters_its_statistics_is_caught() -> None:
    """Shamir 2-of-4 reconstructs from redundant shares, so an altered statistic is detected
    and its sender named; the round aborts instead of settling on weights a cheater chose."""
    plan, rows = _plan_and_rows()
    shamir = scheme_named("shamir", n=4, threshold=2)
    config = RoundConfig("e", plan.layout.reduction(), shamir, 1, ensemble=plan)
    outcomes = simulate_round(
        config, rows, AesCtrRandom(bytes(16)),
        faults=Faults(tamper={4: lambda v: v + np.uint64(1)}),
    )  # fmt: skip
    for node in (1, 2, 3):
        outcome = outcomes[node]
        assert isinstance(outcome, Abort) and outcome.reason is AbortReason.INCONSISTENT_SHARES
        assert outcome.culprits == (4,)


def test_statistics_are_checked_like_partials() -> None:
    plan, rows = _plan_and_rows(models=2)
    shamir = scheme_named("shamir", n=3, threshold=2)
    config = RoundConfig("e", plan.layout.reduction(), shamir, 1, ensemble=plan)
    node = HeavyNodeRound(config, 1, AesCtrRandom(bytes(16)))
    with pytest.raises(ProtocolError, match="statistic from node 2 must be a uint64 vector"):
        node.handle(Statistic("e", 2, 1, ("0xaa", "0xbb"), np.zeros(3, dtype=np.uint64)))
    node.handle(Statistic("e", 2, 1, ("0xaa", "0xbb"), np.zeros(2, dtype=np.uint64)))
    with pytest.raises(ProtocolError, match="second statistic"):
        node.handle(Statistic("e", 2, 1, ("0xaa", "0xbb"), np.zeros(2, dtype=np.uint64)))
    node.handle(PeerUnavailable("e", 3))
    assert node.phase is Phase.COLLECTING
    plain = RoundConfig("p", plan.layout.reduction(), shamir, 1, weights={"0xaa": 1})
    other = HeavyNodeRound(plain, 1, AesCtrRandom(bytes(16)))
    with pytest.raises(ProtocolError, match="fits no ensemble weights"):
        other.handle(Statistic("p", 2, 1, ("0xaa",), np.zeros(1, dtype=np.uint64)))


def test_an_ensemble_round_takes_no_public_weights_and_no_noise() -> None:
    plan, _ = _plan_and_rows()
    shamir = scheme_named("shamir", n=3, threshold=2)
    with pytest.raises(ReductionError, match="one of them"):
        RoundConfig("e", plan.layout.reduction(), shamir, 1, weights={"a": 1}, ensemble=plan)
    with pytest.raises(ReductionError, match="layout"):
        RoundConfig("e", Layout(1, 1, 2).reduction(), shamir, 1,
                    ensemble=plan)  # fmt: skip


def test_model_columns_are_aligned_to_the_job_s_classes() -> None:
    proba = np.array([[0.25, 0.75], [1.0, 0.0]])
    aligned = align_probabilities(proba, np.array([3, 1]), 4)
    assert aligned.tolist() == [[0, 0.75, 0, 0.25], [0, 0, 0, 1.0]]
    with pytest.raises(EnsembleError, match="not all in 0..3"):
        align_probabilities(proba, np.array([1, 4]), 4)
    with pytest.raises(EnsembleError, match="integer labels"):
        align_probabilities(proba, np.array(["a", "b"]), 4)
    with pytest.raises(EnsembleError, match="twice"):
        align_probabilities(proba, np.array([1, 1]), 4)
    with pytest.raises(EnsembleError, match="shape"):
        align_probabilities(proba, np.array([1, 2, 3]), 4)
