"""Secure ensembling: the committee reconstructs only per-model validation statistics and the
weighted test probabilities, and matches the plaintext ensemble within the encoding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.ensemble import (
    BEST_MODEL,
    PROB_FIELD,
    WEIGHT_SCALE,
    EnsembleError,
    EnsemblePlan,
    Layout,
    _spans_a_unit_vector,
    align_probabilities,
    blend_slots,
    blend_weights,
    fit_weights,
    plain_ensemble,
    records,
    select,
    stat_partial,
)
from compute.errors import ProtocolError, ReductionError
from compute.messages import PeerUnavailable, RoundConfig, Statistic
from compute.randomness import AesCtrRandom
from compute.reduce import Abort, AbortReason, ReduceOp, Reduction, combine
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
    assert secure.chosen == plain.chosen
    assert [(c.name, c.accuracy) for c in secure.candidates] == [
        (c.name, c.accuracy) for c in plain.candidates
    ]


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


def _models_on_validation(
    data: st.DataObject, models: int, n_val: int, classes: int
) -> dict[str, np.ndarray]:
    """Validation probabilities with what breaks a naive fit: exact copies of a model, models
    far below chance, near-ties inside a row."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    val: dict[str, np.ndarray] = {}
    for i in range(models):
        kind = data.draw(st.sampled_from(["random", "copy", "confident", "wrong"]))
        if kind == "copy" and val:
            val[f"m{i}"] = val[data.draw(st.sampled_from(sorted(val)))].copy()
        elif kind == "confident":
            val[f"m{i}"] = np.eye(classes)[rng.integers(0, classes, n_val)]
        else:
            val[f"m{i}"] = _probs(rng, n_val, classes)
    return val


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    models=st.integers(1, 7),
    n_val=st.integers(1, 25),
    classes=st.integers(2, 5),
)
def test_the_chosen_candidate_is_never_worse_than_the_best_model_on_validation(
    data: st.DataObject, models: int, n_val: int, classes: int
) -> None:
    """The pure core's choice (`blend_weights` then `select`, on the fixed point the committee
    reconstructs): its validation accuracy is at least the best model's; at most M - 1 blends
    are opened, and no combination of them is one model's outputs."""
    val = _models_on_validation(data, models, n_val, classes)
    y_val = np.asarray(data.draw(st.lists(st.integers(0, classes - 1), min_size=n_val,
                                          max_size=n_val)))  # fmt: skip
    layout = Layout(n_val, 1, classes)
    names = sorted(val)
    correct = [int((val[m].argmax(axis=1) == y_val).sum()) for m in names]
    totals = np.array(correct, dtype=np.int64) * PROB_FIELD.scale
    blends = blend_weights(totals, layout)
    encoded = np.stack([PROB_FIELD.encode(val[m]).ravel() for m in names])
    opened = np.concatenate([np.zeros(0, dtype=np.int64), *(w @ encoded for w in blends)])
    candidates, chosen = select(totals, blends, opened, layout, y_val)

    best = max(correct) / n_val
    assert candidates[0].name == BEST_MODEL and candidates[0].accuracy == best
    assert list(candidates[0].weights) == list(np.eye(models, dtype=np.int64)[
        int(np.argmax(correct))] * WEIGHT_SCALE)  # fmt: skip
    assert candidates[chosen].accuracy >= best
    assert candidates[chosen].accuracy == max(c.accuracy for c in candidates)
    # A tie goes to the best model alone: a blend is chosen only when it is strictly better.
    assert chosen == 0 or candidates[chosen].accuracy > best
    assert len(blends) == blend_slots(models) <= max(models - 1, 0)
    evaluated = np.array([w for w in blends if w.any()], dtype=np.float64).reshape(-1, models)
    assert len(candidates) == 1 + len(evaluated)
    rank = np.linalg.matrix_rank(evaluated) if len(evaluated) else 0
    for i in range(models):  # a unit vector in the span would raise the rank by nothing
        assert np.linalg.matrix_rank(np.vstack([evaluated, np.eye(models)[i]])) == rank + 1
    for candidate in candidates[1:]:  # weights on the simplex (to rounding), accuracy of argmax
        weights = candidate.weights
        assert np.all(weights >= 0) and abs(int(weights.sum()) - WEIGHT_SCALE) <= models
        mixture = (weights @ encoded).reshape(n_val, classes)
        assert candidate.accuracy == float((mixture.argmax(axis=1) == y_val).mean())


def test_a_blend_that_outvotes_each_model_is_chosen() -> None:
    """Three models, each wrong on a different third of the rows: each alone gets 2/3 right,
    any blend with comparable weights gets every row right."""
    y_val = np.array([0, 1, 2] * 3)
    val = {}
    for i in range(3):
        proba = np.full((9, 3), 0.1)
        proba[np.arange(9), y_val] = 0.8
        wrong = np.arange(9)[np.arange(9) % 3 == i]
        proba[wrong] = 0.1
        proba[wrong, (y_val[wrong] + 1) % 3] = 0.8
        val[f"m{i}"] = proba
    plain = plain_ensemble(val, val, y_val, 3)
    # Equal accuracies: every power gives equal weights, one blend (opened once).
    assert [c.accuracy for c in plain.candidates] == [pytest.approx(2 / 3), 1.0]
    assert plain.chosen == 1 and plain.candidates[1].name == "(accuracy - chance)^16"
    assert plain.weights == pytest.approx([1 / 3] * 3, abs=1e-4)


def test_no_blend_opens_one_model_s_outputs() -> None:
    layout = Layout(10, 1, 2)
    scale = PROB_FIELD.scale
    # Only one model above chance: every blend would be that model alone.
    assert [w.tolist() for w in blend_weights([9 * scale, 5 * scale, 2 * scale], layout)] == [
        [0, 0, 0], [0, 0, 0]
    ]  # fmt: skip
    # Two models above chance, tied: every power gives the same blend, opened once.
    tied = blend_weights([9 * scale, 9 * scale, 1 * scale], layout)
    assert [w.tolist() for w in tied] == [[32768, 32768, 0], [0, 0, 0]]
    assert _spans_a_unit_vector([[1, 1, 0], [1, 1, 1]])  # their difference is model 3's
    assert _spans_a_unit_vector([[2, 1, 1], [1, 1, 1]])
    assert not _spans_a_unit_vector([[3, 2, 1], [1, 1, 1]])
    assert not _spans_a_unit_vector([[1, 1]])
    assert _spans_a_unit_vector([[0, 5]])


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


def test_a_record_holds_predictions_and_probabilities_on_validation_and_test() -> None:
    layout = Layout(2, 1, 3)
    row = records(layout, [[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]], [[0.1, 0.6, 0.3]])
    assert list(row[0]) == [0, 1, 0, 1, 0, 0, 0.2, 0.5, 0.3, 0.4, 0.4, 0.2, 0.1, 0.6, 0.3]
    assert row.shape == (1, layout.length)


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


def test_a_heavy_node_that_alters_its_blends_is_caught() -> None:
    """The blends' validation probabilities are reconstructed like the statistics: a node that
    alters only its shares of them (stage 1) is named, and nothing is released."""
    plan, rows = _plan_and_rows()
    shamir = scheme_named("shamir", n=4, threshold=2)
    config = RoundConfig("e", plan.layout.reduction(), shamir, 1, ensemble=plan)
    blends = plan.blend_length(len(rows))
    assert blends == 3 * 12 * 3
    outcomes = simulate_round(
        config, rows, AesCtrRandom(bytes(16)),
        faults=Faults(tamper={4: lambda v: v + np.uint64(len(v) == blends)}),
    )  # fmt: skip
    for node in (1, 2, 3):
        outcome = outcomes[node]
        assert isinstance(outcome, Abort) and outcome.reason is AbortReason.INCONSISTENT_SHARES
        assert outcome.culprits == (4,)


def test_blends_are_checked_like_statistics() -> None:
    plan, rows = _plan_and_rows(models=2)
    shamir = scheme_named("shamir", n=3, threshold=2)
    config = RoundConfig("e", plan.layout.reduction(), shamir, 1, ensemble=plan)
    node = HeavyNodeRound(config, 1, AesCtrRandom(bytes(16)))
    length = plan.blend_length(2)
    assert length == 1 * 12 * 3  # two models: one blend
    pair = ("0xaa", "0xbb")
    with pytest.raises(ProtocolError, match=f"blends from node 2 must be .* of length {length}"):
        node.handle(Statistic("e", 2, 1, pair, np.zeros(2, dtype=np.uint64), 1))
    node.handle(Statistic("e", 2, 1, pair, np.zeros(length, dtype=np.uint64), 1))
    node.handle(Statistic("e", 2, 1, pair, np.zeros(2, dtype=np.uint64)))  # stage 0 apart
    with pytest.raises(ProtocolError, match="second blends"):
        node.handle(Statistic("e", 2, 1, pair, np.zeros(length, dtype=np.uint64), 1))
    with pytest.raises(ProtocolError, match="of stage 2"):
        node.handle(Statistic("e", 3, 1, pair, np.zeros(length, dtype=np.uint64), 2))


def test_a_single_model_skips_the_blends() -> None:
    plan, rows = _plan_and_rows(models=1)
    assert plan.blend_length(1) == 0
    result = simulate_ensemble(scheme_named("shamir", n=3, threshold=2), rows, plan,
                               AesCtrRandom(bytes(16)))  # fmt: skip
    assert [c.name for c in result.candidates] == [BEST_MODEL] and result.chosen == 0
    assert list(result.weights) == [1.0]


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
    plain = RoundConfig("p", Reduction(ReduceOp.SUM, PROB_FIELD, width=3), shamir, 1)
    other = HeavyNodeRound(plain, 1, AesCtrRandom(bytes(16)))
    with pytest.raises(ProtocolError, match="fits no ensemble weights"):
        other.handle(Statistic("p", 2, 1, ("0xaa",), np.zeros(1, dtype=np.uint64)))


def test_a_weighted_sum_round_is_an_ensemble_round() -> None:
    plan, _ = _plan_and_rows()
    shamir = scheme_named("shamir", n=3, threshold=2)
    with pytest.raises(ReductionError, match="needs an ensemble plan"):
        RoundConfig("e", plan.layout.reduction(), shamir, 1)
    with pytest.raises(ReductionError, match="only a weighted sum takes one"):
        RoundConfig("e", Reduction(ReduceOp.SUM, PROB_FIELD, width=plan.layout.length), shamir, 1,
                    ensemble=plan)  # fmt: skip
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
