"""`market bench ensemble`: the PMSR paper's ensemble table on data shipped with scikit-learn.

Up to six model holders (`MODEL_FAMILIES`, the first `models` of them), each with a different
model family trained on its own private part of the bundled digits set (1,797 images, 10
classes): logistic regression, Gaussian naive Bayes, a decision tree, k-nearest neighbours, a
random forest and a small MLP. The private rows are always cut in six, so a family's model is
the same whichever number of holders takes part. The rest of the set is
the public evaluation set, split into a validation half (labels public, for fitting the
weights) and a held-out test half (labels kept by the buyer, for the table).

Each holder's class probabilities are secret-shared among a three-node committee, which runs
the heavy nodes' ensemble round (`compute.simulation.simulate_ensemble`: the weights fitted on
the validation split from per-model statistics computed under sharing, then the weighted test
probabilities), in one process; `plain_ensemble` does
the same in floats. The table reports every model's test accuracy, validation accuracy (what the
committee reconstructs) and validation soft accuracy (computed here in the clear, for
reference), the ensemble's test accuracy under sharing and in plaintext, the gain over the best
single model and over the mean, and each holder's weight and payout (`split_by_weights` of the
pool)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from compute.ensemble import (
    WEIGHT_SCALE,
    EnsemblePlan,
    align_probabilities,
    plain_ensemble,
    records,
)
from compute.randomness import AesCtrRandom
from compute.sharing import scheme_named
from compute.simulation import simulate_ensemble
from market.valuation.payouts import split_by_weights
from nodes.evalset import EvaluationSet

POOL = 950 * 10**18
"""The payout pool the table splits (a 1,000 DATA budget less a 5% fee)."""

MODEL_FAMILIES = (
    "logistic", "naive_bayes", "decision_tree", "knn", "random_forest", "mlp",
)  # fmt: skip
"""The bench's holders in order; `--models N` takes the first N."""


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


@dataclass
class Holders:
    """The model holders, each with its model trained on its own part of digits, and the public
    evaluation set (the buyer keeps `y_test`)."""

    models: dict[str, Any]
    train_rows: dict[str, int]
    evaluation: EvaluationSet
    y_test: np.ndarray

    def probabilities(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """What only holder `name` sees: its model's validation and test probabilities."""
        model, classes = self.models[name], self.evaluation.classes
        return (
            align_probabilities(model.predict_proba(self.evaluation.x_val), model.classes_,
                                classes),
            align_probabilities(model.predict_proba(self.evaluation.x_test), model.classes_,
                                classes),
        )  # fmt: skip

    def test_accuracy(self, probabilities: np.ndarray) -> float:
        return float((probabilities.argmax(axis=1) == self.y_test).mean())


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    return x[order], y[order]


@functools.lru_cache(maxsize=len(MODEL_FAMILIES))
def _fitted(seed: int, family: str) -> tuple[Any, int]:
    """Family `family`'s model trained on its holder's private part of digits (shuffled by
    `seed`), and that part's size; kept, so runs with fewer holders reuse the same models."""
    x, y = _digits(seed)
    parts = np.array_split(np.arange(len(y) * 2 // 5), len(MODEL_FAMILIES))
    rows = parts[MODEL_FAMILIES.index(family)]
    return _models(seed)[family].fit(x[rows], y[rows]), len(rows)


def train_holders(seed: int = 0, models: int = len(MODEL_FAMILIES)) -> Holders:
    """Digits shuffled by `seed`: 40% of the rows cut into six parts, the private training data
    of the first `models` families' holders, the rest the public evaluation set, halved into
    validation and test."""
    if not 1 <= models <= len(MODEL_FAMILIES):
        raise ValueError(f"models must be 1 to {len(MODEL_FAMILIES)}, not {models}")
    x, y = _digits(seed)
    fitted = {name: _fitted(seed, name) for name in MODEL_FAMILIES[:models]}
    public = np.arange(len(y) * 2 // 5, len(y))
    val, test = public[: len(public) // 2], public[len(public) // 2 :]
    evaluation = EvaluationSet(x[val], y[val], x[test], classes=int(y.max()) + 1)
    return Holders(
        {name: model for name, (model, _) in fitted.items()},
        {name: rows for name, (_, rows) in fitted.items()},
        evaluation,
        y[test],
    )


def run_ensemble_bench(
    seed: int = 0, scheme: str = "shamir", models: int = len(MODEL_FAMILIES)
) -> dict[str, Any]:
    holders = train_holders(seed, models)
    evaluation, classes = holders.evaluation, holders.evaluation.classes
    layout = evaluation.layout
    val_probs, test_probs, accuracy = {}, {}, {}
    for name in holders.models:
        val_probs[name], test_probs[name] = holders.probabilities(name)
        accuracy[name] = holders.test_accuracy(test_probs[name])

    t0 = time.perf_counter()
    shared = {name: records(layout, val_probs[name], test_probs[name]) for name in holders.models}
    committee = scheme_named(scheme, n=3, threshold=2 if scheme == "shamir" else None)
    plan = EnsemblePlan(layout, evaluation.y_val)
    secure = simulate_ensemble(committee, shared, plan, AesCtrRandom(bytes(16)))
    secure_s = time.perf_counter() - t0
    plain = plain_ensemble(val_probs, test_probs, evaluation.y_val, classes)

    secure_acc = holders.test_accuracy(secure.probabilities)
    plain_acc = holders.test_accuracy(plain.probabilities)
    weights = dict(zip(secure.models, (float(w) for w in secure.weights), strict=True))
    payouts = split_by_weights(POOL, {m: round(w * WEIGHT_SCALE) for m, w in weights.items()})
    best = max(accuracy.values())
    candidates = [
        {
            "name": c.name,
            "weights": dict(zip(secure.models, (int(w) / WEIGHT_SCALE for w in c.weights),
                                strict=True)),
            "validation_accuracy": c.accuracy,
            # In the clear, for the table: the committee never sees test labels.
            "test_accuracy": holders.test_accuracy(sum(
                int(w) / WEIGHT_SCALE * np.clip(test_probs[m], 0, 1)
                for w, m in zip(c.weights, secure.models, strict=True)
            )),
        }
        for c in secure.candidates
    ]  # fmt: skip
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
        "validation_accuracy": dict(
            zip(secure.models, (float(a) for a in secure.accuracy), strict=True)
        ),
        "validation_soft_accuracy": {
            name: float(val_probs[name][np.arange(layout.n_val), evaluation.y_val].mean())
            for name in holders.models
        },
        "candidates": candidates,
        "chosen": secure.chosen,
        "plain_chosen": plain.chosen,
        "payouts": {m: str(payouts.get(m, 0)) for m in weights},
        "train_rows": holders.train_rows,
        "validation_rows": layout.n_val,
        "test_rows": layout.n_test,
        "scheme": committee.name,
        "secure_s": secure_s,
    }


def format_ensemble_table(result: dict[str, Any]) -> str:
    lines = [
        f"digits: {len(result['models'])} model holders, {result['validation_rows']} "
        f"validation and {result['test_rows']} test rows, {result['scheme']} sharing among 3 "
        f"heavy nodes ({result['secure_s']:.3f} s)",
        "",
        f"{'model':<16}{'train rows':>11}{'test acc':>10}{'val acc':>9}{'val soft acc':>14}"
        f"{'weight':>9}{'payout (DATA)':>15}",
    ]
    for name, acc in sorted(result["models"].items(), key=lambda kv: -kv[1]):
        lines.append(
            f"{name:<16}{result['train_rows'][name]:>11}{acc:>10.4f}"
            f"{result['validation_accuracy'][name]:>9.4f}"
            f"{result['validation_soft_accuracy'][name]:>14.4f}{result['weights'][name]:>9.4f}"
            f"{int(result['payouts'][name]) / 10**18:>15.3f}"
        )
    lines += ["", f"{'candidate':<28}{'val acc':>9}{'test acc':>10}  weights"]
    for i, candidate in enumerate(result.get("candidates", [])):
        mark = "*" if i == result["chosen"] else " "
        weights = ", ".join(f"{m} {w:.3f}" for m, w in candidate["weights"].items() if w)
        lines.append(
            f"{mark} {candidate['name']:<26}{candidate['validation_accuracy']:>9.4f}"
            f"{candidate['test_accuracy']:>10.4f}  {weights}"
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
