"""`market bench ensemble`: the PMSR paper's ensemble table on data shipped with scikit-learn.

Six model holders, each with a different model family trained on its own private part of the
bundled digits set (1,797 images, 10 classes): logistic regression, Gaussian naive Bayes, a
decision tree, k-nearest neighbours, a random forest and a small MLP. The rest of the set is
the public evaluation set, split into a validation half (labels public, for fitting the
weights) and a held-out test half (labels kept by the buyer, for the table).

Each holder's class probabilities are secret-shared among a three-node committee, which runs
the heavy nodes' ensemble round (`compute.simulation.simulate_ensemble`: the weights fitted on
the validation split from per-model statistics computed under sharing, then the weighted test
probabilities), in one process; `plain_ensemble` does
the same in floats. The table reports every model's test accuracy, the ensemble's under sharing
and in plaintext, the gain over the best single model and over the mean, and each holder's
weight and payout (`split_by_weights` of the pool)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from compute.ensemble import (
    WEIGHT_SCALE,
    EnsemblePlan,
    Layout,
    align_probabilities,
    plain_ensemble,
    records,
)
from compute.randomness import AesCtrRandom
from compute.sharing import scheme_named
from compute.simulation import simulate_ensemble
from market.valuation.payouts import split_by_weights

POOL = 950 * 10**18
"""The payout pool the table splits (a 1,000 DATA budget less a 5% fee)."""


def _models(seed: int) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    return {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2_000)),
        "naive_bayes": GaussianNB(),
        "decision_tree": DecisionTreeClassifier(max_depth=8, random_state=seed),
        "knn": KNeighborsClassifier(n_neighbors=5),
        "random_forest": RandomForestClassifier(n_estimators=50, random_state=seed),
        "mlp": make_pipeline(
            StandardScaler(), MLPClassifier((64,), max_iter=1_000, random_state=seed)
        ),
    }


def run_ensemble_bench(seed: int = 0, scheme: str = "shamir") -> dict[str, Any]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    classes = int(y.max()) + 1
    models = _models(seed)
    n_private = len(y) * 2 // 5
    parts = np.array_split(np.arange(n_private), len(models))
    public = np.arange(n_private, len(y))
    val, test = public[: len(public) // 2], public[len(public) // 2 :]
    layout = Layout(len(val), len(test), classes)

    val_probs, test_probs, accuracy, train_rows = {}, {}, {}, {}
    for (name, model), rows in zip(models.items(), parts, strict=True):
        model.fit(x[rows], y[rows])
        val_probs[name] = align_probabilities(model.predict_proba(x[val]), model.classes_, classes)
        test_probs[name] = align_probabilities(
            model.predict_proba(x[test]), model.classes_, classes
        )
        accuracy[name] = float((test_probs[name].argmax(axis=1) == y[test]).mean())
        train_rows[name] = len(rows)

    t0 = time.perf_counter()
    shared = {name: records(layout, val_probs[name], test_probs[name]) for name in models}
    committee = scheme_named(scheme, n=3, threshold=2 if scheme == "shamir" else None)
    plan = EnsemblePlan(layout, y[val])
    secure = simulate_ensemble(committee, shared, plan, AesCtrRandom(bytes(16)))
    secure_s = time.perf_counter() - t0
    plain = plain_ensemble(val_probs, test_probs, y[val], classes)

    secure_acc = float((secure.probabilities.argmax(axis=1) == y[test]).mean())
    plain_acc = float((plain.probabilities.argmax(axis=1) == y[test]).mean())
    weights = dict(zip(secure.models, (float(w) for w in secure.weights), strict=True))
    payouts = split_by_weights(POOL, {m: round(w * WEIGHT_SCALE) for m, w in weights.items()})
    best = max(accuracy.values())
    return {
        "models": accuracy,
        "ensemble": secure_acc,
        "plain_ensemble": plain_acc,
        "gain_over_best": secure_acc - best,
        "gain_over_mean": secure_acc - float(np.mean(list(accuracy.values()))),
        "max_abs_probability_error": float(
            np.abs(secure.probabilities - plain.probabilities).max()
        ),
        "weights": weights,
        "validation_soft_accuracy": dict(
            zip(secure.models, (float(a) for a in secure.accuracy), strict=True)
        ),
        "payouts": {m: str(a) for m, a in payouts.items()},
        "train_rows": train_rows,
        "validation_rows": len(val),
        "test_rows": len(test),
        "scheme": committee.name,
        "secure_s": secure_s,
    }


def format_ensemble_table(result: dict[str, Any]) -> str:
    lines = [
        f"digits: {len(result['models'])} model holders, {result['validation_rows']} "
        f"validation and {result['test_rows']} test rows, {result['scheme']} sharing among 3 "
        f"heavy nodes ({result['secure_s']:.3f} s)",
        "",
        f"{'model':<16}{'train rows':>11}{'test acc':>10}{'val soft acc':>14}{'weight':>9}"
        f"{'payout (DATA)':>15}",
    ]
    for name, acc in sorted(result["models"].items(), key=lambda kv: -kv[1]):
        lines.append(
            f"{name:<16}{result['train_rows'][name]:>11}{acc:>10.4f}"
            f"{result['validation_soft_accuracy'][name]:>14.4f}{result['weights'][name]:>9.4f}"
            f"{int(result['payouts'][name]) / 10**18:>15.3f}"
        )
    lines += [
        "",
        f"{'ensemble (secure)':<16}{result['ensemble']:>21.4f}",
        f"{'ensemble (plain)':<16}{result['plain_ensemble']:>21.4f}",
        f"gain over the best model {result['gain_over_best']:+.4f}, over the mean "
        f"{result['gain_over_mean']:+.4f}; largest probability difference secure vs plain "
        f"{result['max_abs_probability_error']:.2e}",
    ]
    return "\n".join(lines)
