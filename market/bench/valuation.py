"""`market bench valuation` and the market figure: encrypted versus plaintext influence, and
influence versus the true effect of retraining.

The benchmark's market (`bench_market`): scikit-learn's digits (1,797 rows), the buyer keeping
15% to train and 20% to evaluate, and ten providers of two levels of each quality
(`data.BENCH_PROVIDERS`) holding `examples` rows in all (1,000 each for 10,000). The 1,169 pool
rows are split disjointly between the providers, and each provider's part is resampled with
replacement, with a jitter of 0.1 standard deviation per feature on every extra copy, up to its
size. The buyer's model is an MLP 64-64-10 (4,810 parameters) trained by full-batch Adam with
weight decay 0.03 (`TrainConfig()`); the query uses the Gauss-Newton curvature damped by the
weight decay.

For each k, in one process one after the other:

- `plain_s`: every provider's plaintext scores `G @ q` in NumPy (best of 5);
- `encrypted_s`: the whole encrypted round under `TenSealCKKS` for the same gradients: the buyer
  encrypts q; each provider loads the public context and `Enc(q)` and scores its examples; the
  buyer decrypts every provider's scores (one pass, single thread);
- `bytes_per_provider`: what one provider downloads (public context and `Enc(q)`) plus what it
  uploads (its encrypted scores), averaged over the providers;
- `pearson`, `spearman`: decrypted against plaintext per-example scores (all examples);
- `committee_s`, `bytes_per_provider_committee`: the committee's totals instead (what the
  payouts follow: `committee_round`): the whole Shamir 2-of-3 round for the same providers, and
  what one provider uploads for it (k numbers, seed-compressed and sealed, to three members),
  beside the CKKS path's `bytes_per_provider`; both also at the top level for the largest k.

`retrain_spearman` is the Spearman correlation, over the providers, between their plaintext
scores at the largest k and the true effect of their data (the buyer's evaluation loss falls by
that much when it retrains with the provider's data added; `influence.retrain_effect`). The
projected gradients (the same for both paths) are timed apart, as `gradients_s`.

`utility_pearson`, `utility_spearman` (over `utility_pairs` buyer-seller pairs, timed as
`utility_s`) are the fidelity to realized utility as the TIP authors measure it: the fall of
each buyer's evaluation loss after fine-tuning its last layer for one epoch on a seller's data,
against the seller's total influence (`tip.utility.utility_fidelity`), with the authors'
published figure beside them as `utility_published`. They are for the influence damped by the
buyer's weight decay (the retraining influence function). `utility_pearson_budget_damping` and
`utility_spearman_budget_damping` are the same pairs under the damping the fine-tuning protocol
calls for (`damping="budget"`: `lambda = 1/(lr * T)`, T the steps of the buyer's stated budget,
one `q` per job), reported beside them because they stay below the 0.9 Spearman target.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from compute.messages import Result as RoundResult
from compute.messages import RoundConfig
from compute.products import check_totals, gradient_bits, gradient_reduction, query_bits
from compute.randomness import AesCtrRandom
from compute.round import LightNodeRound
from compute.sharing import ShamirScheme
from compute.simulation import simulate_valuation
from market.valuation.tip.data import BENCH_PROVIDERS, Market, make_market
from market.valuation.tip.he import HEBackend, TenSealCKKS
from market.valuation.tip.influence import (
    MLP,
    Projection,
    Query,
    TrainConfig,
    build_query,
    influence_scores,
    mean_loss,
    projected_gradients,
    retrain_effect,
    train,
)
from market.valuation.tip.utility import TIP_PUBLISHED, UTILITY_BUYERS, utility_fidelity

FloatArray = NDArray[np.float64]

QUALITY_COLORS = {
    "clean": "#2b8a3e",
    "duplicated": "#74b816",
    "shifted": "#f08c00",
    "noisy": "#e8590c",
    "flipped": "#c92a2a",
}


# ------------------------------------------------------------------------------- statistics
def _ranks(values: FloatArray) -> FloatArray:
    """Ranks 1..n, ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_vals = values[order]
    start = 0
    while start < len(values):
        stop = start + 1
        while stop < len(values) and sorted_vals[stop] == sorted_vals[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2.0
        start = stop
    return ranks


def pearson(a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray) -> float:
    x = np.asarray(a, dtype=np.float64) - np.mean(a)
    y = np.asarray(b, dtype=np.float64) - np.mean(b)
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def spearman(a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray) -> float:
    return pearson(_ranks(np.asarray(a)), _ranks(np.asarray(b)))


# ------------------------------------------------------------------------------- setup
@dataclass
class BenchSetup:
    market: Market
    model: MLP
    config: TrainConfig
    theta: FloatArray
    base_loss: float


def bench_market(examples: int = 10_000, seed: int = 0, hidden: int = 64) -> BenchSetup:
    """The benchmark's market and the buyer's trained model (see the module docstring)."""
    market = make_market("digits", BENCH_PROVIDERS, examples=examples, seed=seed)
    model = MLP(market.n_features, hidden, market.n_classes)
    config = TrainConfig(seed=seed)
    theta = train(model, *market.train, config)
    return BenchSetup(market, model, config, theta, mean_loss(model, theta, *market.eval))


def retrain_effects(setup: BenchSetup) -> dict[str, float]:
    """Each provider's true effect: the fall of the buyer's evaluation loss when it retrains
    with that provider's data added."""
    m = setup.market
    return {
        p.name: retrain_effect(
            setup.model, setup.config, m.train, m.eval, (p.x, p.y), setup.base_loss
        )
        for p in m.providers
    }


def provider_gradients(
    setup: BenchSetup, projection: Projection
) -> tuple[dict[str, FloatArray], float]:
    t0 = time.perf_counter()
    grads = {
        p.name: projected_gradients(setup.model, setup.theta, p.x, p.y, projection)
        for p in setup.market.providers
    }
    return grads, time.perf_counter() - t0


# ------------------------------------------------------------------------------- bench
SEALED_BOX_BYTES = 48
"""What sealing a share to a member's key adds (PyNaCl SealedBox: an ephemeral X25519 key and
a Poly1305 tag)."""


def committee_round(
    setup: BenchSetup,
    projection: Projection,
    query: Query,
    grads: dict[str, FloatArray],
    seed: int,
) -> dict[str, Any]:
    """The committee's totals for the same providers (`compute.simulation.simulate_valuation`,
    Shamir 2-of-3): the buyer shares q, each provider its summed gradient `G_p`, every member
    opens each `q . G_p`. `committee_s`: that whole round in one process (sharing, masks,
    products, reconstruction at every member); `bytes_per_provider_committee`: what one provider
    uploads for it (its sealed shares of k numbers, seed-compressed, to 3 members: it downloads
    nothing beyond the model release, which both paths need); `committee_max_abs_error`: the
    totals against the plaintext `q . G_p` in floating point."""
    train_gradients = projected_gradients(setup.model, setup.theta, *setup.market.train, projection)
    largest = max(len(g) for g in grads.values()) * float(np.abs(train_gradients).max())
    summed = {name: g.sum(axis=0) for name, g in grads.items()}
    q_bits = query_bits(query.q)
    g_bits = max(gradient_bits(largest), 0)
    scheme = ShamirScheme(3, 2)
    rng = AesCtrRandom.from_seed(f"bench-committee-{seed}")
    t0 = time.perf_counter()
    outcomes, plan = simulate_valuation(query.q, summed, scheme, rng, q_bits=q_bits, g_bits=g_bits)
    committee_s = time.perf_counter() - t0
    outcome = outcomes[1]
    if not isinstance(outcome, RoundResult):
        raise RuntimeError(f"the committee's round did not finish: {outcome}")
    opened = check_totals(outcome.aggregate.total, plan.k, plan.scale_bits).influence()
    totals = dict(zip(outcome.participants, opened, strict=True))
    errors = [abs(float(totals[n] or 0.0) - float(summed[n] @ query.q)) for n in summed]
    config = RoundConfig("bench", gradient_reduction(plan.k, g_bits), scheme, 1, products=plan)
    uploads = []
    for name, g in summed.items():
        messages = LightNodeRound(config, name).submit(g.reshape(1, -1), rng)
        uploads.append(sum(
            SEALED_BOX_BYTES + (len(m.seed) if m.seed is not None else 8 * m.share.size)
            for m in messages
        ))  # fmt: skip
    return {
        "committee_s": committee_s,
        "bytes_per_provider_committee": int(round(float(np.mean(uploads)))),
        "committee_max_abs_error": max(errors),
        "committee_void": sum(1 for v in opened if v is None),
    }


def buyer_query(setup: BenchSetup, seed: int, k: int) -> tuple[Projection, Query]:
    """The seeded projection to `k` dimensions and the buyer's query for `setup`'s market."""
    projection = Projection(seed, k, setup.model.n_params)
    query = build_query(
        setup.model,
        setup.theta,
        setup.market.train,
        setup.market.eval,
        projection,
        damping=setup.config.weight_decay,
    )
    return projection, query


def utility_figures(buyers: int = len(UTILITY_BUYERS)) -> dict[str, Any]:
    """Influence against realized utility over the first `buyers` of `UTILITY_BUYERS` (0: none)."""
    if buyers <= 0:
        return {}
    t0 = time.perf_counter()
    fidelity = utility_fidelity(UTILITY_BUYERS[:buyers], damping="weight-decay")
    utility_s = time.perf_counter() - t0
    budget = utility_fidelity(UTILITY_BUYERS[:buyers], damping="budget")
    return {
        "utility_pearson": fidelity.pearson,
        "utility_spearman": fidelity.spearman,
        "utility_pairs": len(fidelity.pairs),
        "utility_published": dict(TIP_PUBLISHED),
        "utility_per_buyer": fidelity.per_buyer,
        "utility_s": utility_s,
        "utility_pearson_budget_damping": budget.pearson,
        "utility_spearman_budget_damping": budget.spearman,
        "utility_per_buyer_budget_damping": budget.per_buyer,
    }


def run_valuation_bench(
    ks: Sequence[int] = (256, 1024),
    examples: int = 10_000,
    seed: int = 0,
    backend: HEBackend | None = None,
    utility_buyers: int = len(UTILITY_BUYERS),
) -> dict[str, Any]:
    """Encrypted versus plaintext scoring and fidelity at each k; see the module docstring."""
    backend = backend or TenSealCKKS()
    setup = bench_market(examples, seed)
    effects = retrain_effects(setup)
    names = [p.name for p in setup.market.providers]
    result: dict[str, Any] = {}
    provider_scores: dict[int, list[float]] = {}
    for k in ks:
        projection, query = buyer_query(setup, seed, k)
        grads, gradients_s = provider_gradients(setup, projection)
        plain_s = np.inf
        for _ in range(5):
            t0 = time.perf_counter()
            plain = {name: influence_scores(g, query) for name, g in grads.items()}
            plain_s = min(plain_s, time.perf_counter() - t0)

        t0 = time.perf_counter()
        buyer = backend.create_buyer(k)
        public_context = buyer.public_context()
        encrypted_query = buyer.encrypt_query(query.q)
        payloads = {}
        for name, g in grads.items():
            provider = backend.load_public(public_context)
            payloads[name] = provider.score(encrypted_query, g)
        decrypted = {name: buyer.decrypt_scores(payloads[name]) for name in names}
        encrypted_s = time.perf_counter() - t0

        enc_all = np.concatenate([decrypted[n] for n in names])
        plain_all = np.concatenate([plain[n] for n in names])
        up = [len(payloads[n]) for n in names]
        down = len(public_context) + len(encrypted_query)
        provider_scores[k] = [float(plain[n].sum()) for n in names]
        lowest = names[int(np.argmin(provider_scores[k]))]
        result[str(k)] = {
            "encrypted_s": encrypted_s,
            "plain_s": plain_s,
            "bytes_per_provider": int(round(down + float(np.mean(up)))),
            "pearson": pearson(enc_all, plain_all),
            "spearman": spearman(enc_all, plain_all),
            "examples": int(len(enc_all)),
            "encrypted_scores_per_s": len(enc_all) / encrypted_s,
            "plain_scores_per_s": len(plain_all) / plain_s,
            "gradients_s": gradients_s,
            "bytes_down": down,
            "bytes_up": int(round(float(np.mean(up)))),
            "max_abs_error": float(np.abs(enc_all - plain_all).max()),
            "score_range": float(plain_all.max() - plain_all.min()),
            "retrain_spearman": spearman(provider_scores[k], [effects[n] for n in names]),
            "lowest_provider": lowest,
        }
        result[str(k)].update(committee_round(setup, projection, query, grads, seed))
    top = max(ks)
    for key in ("committee_s", "bytes_per_provider_committee"):  # at the largest k, as asked
        result[key] = result[str(top)][key]
    result["retrain_spearman"] = spearman(provider_scores[top], [effects[n] for n in names])
    result["providers"] = {
        name: {
            "quality": p.quality,
            "level": p.level,
            "score": provider_scores[top][i],
            "retrain_effect": effects[name],
        }
        for i, (name, p) in enumerate(zip(names, setup.market.providers, strict=True))
    }
    result.update(utility_figures(utility_buyers))
    return result


def format_valuation_table(result: dict[str, Any]) -> str:
    """The bench as a text table (one row per k, then the providers at the largest k)."""
    ks = sorted((key for key in result if key.isdigit()), key=int)
    lines = [
        f"{'k':>6} {'encrypted s':>12} {'plain s':>10} {'enc scores/s':>13} "
        f"{'bytes/provider':>15} {'pearson':>10} {'spearman':>10} {'retrain rho':>12}",
    ]
    for k in ks:
        r = result[k]
        lines.append(
            f"{k:>6} {r['encrypted_s']:>12.3f} {r['plain_s']:>10.5f} "
            f"{r.get('encrypted_scores_per_s', float('nan')):>13,.0f} "
            f"{r['bytes_per_provider']:>15,} {r['pearson']:>10.6f} {r['spearman']:>10.6f} "
            f"{r.get('retrain_spearman', float('nan')):>12.3f}"
        )
    for k in ks:
        r = result[k]
        if "committee_s" in r:
            lines.append(
                f"k={k}: the committee's totals (what the payouts follow) in "
                f"{r['committee_s']:.3f} s, {r['bytes_per_provider_committee']:,} bytes per "
                f"provider (CKKS: {r['bytes_per_provider']:,}), max error "
                f"{r['committee_max_abs_error']:.2e}"
            )
    lines.append(f"retrain_spearman (k={ks[-1] if ks else '?'}): {result['retrain_spearman']:.3f}")
    if "utility_pairs" in result:
        tip = result["utility_published"]
        lines.append(
            f"realized utility ({result['utility_pairs']} buyer-seller pairs, last layer, one "
            f"epoch): pearson {result['utility_pearson']:.3f} spearman "
            f"{result['utility_spearman']:.3f}; TIP (hospital data) |pearson| "
            f"{tip['pearson']:.3f} |spearman| {tip['spearman']:.3f}"
        )
        if "utility_spearman_budget_damping" in result:
            lines.append(
                "  diagnostic, damping from the fine-tuning budget (1/(lr*T)): pearson "
                f"{result['utility_pearson_budget_damping']:.3f} spearman "
                f"{result['utility_spearman_budget_damping']:.3f}"
            )
    providers = result.get("providers")
    if providers:
        lines.append("")
        lines.append(f"{'provider':<16} {'quality':<11} {'score':>14} {'retrain effect':>15}")
        for name, p in sorted(providers.items(), key=lambda kv: -kv[1]["score"]):
            lines.append(
                f"{name:<16} {p['quality']:<11} {p['score']:>14.4g} {p['retrain_effect']:>15.4f}"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------- figure
def valuation_figure(
    path: str | Path,
    examples: int = 10_000,
    seed: int = 0,
    k: int = 1024,
    backend: HEBackend | None = None,
) -> dict[str, Any]:
    """Write a PNG of the distribution of per-example influence for each provider of the bench
    market (one violin per provider, colored by quality, providers in order of total score),
    from the scores the buyer decrypts. Returns what was drawn (per-provider sums and medians)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    backend = backend or TenSealCKKS()
    setup = bench_market(examples, seed)
    projection, query = buyer_query(setup, seed, k)
    grads, _ = provider_gradients(setup, projection)
    buyer = backend.create_buyer(k)
    public_context = buyer.public_context()
    encrypted_query = buyer.encrypt_query(query.q)
    scores = {}
    for name, g in grads.items():
        payload = backend.load_public(public_context).score(encrypted_query, g)
        scores[name] = buyer.decrypt_scores(payload)
    providers = sorted(setup.market.providers, key=lambda p: -scores[p.name].sum())
    data = [scores[p.name] for p in providers]
    # Influence is heavy-tailed: a symmetric log scale keeps the bulk and the tails visible.
    linthresh = float(np.percentile(np.abs(np.concatenate(data)), 50)) or 1.0

    fig, ax = plt.subplots(figsize=(11, 5.2), dpi=120)
    parts = ax.violinplot(data, showmedians=True, showextrema=False, widths=0.85)
    for body, p in zip(parts["bodies"], providers, strict=True):
        body.set_facecolor(QUALITY_COLORS[p.quality])
        body.set_edgecolor("black")
        body.set_alpha(0.75)
    parts["cmedians"].set_color("black")
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.set_xticks(range(1, len(providers) + 1))
    ax.set_xticklabels(
        [f"{p.name}\nΣ={scores[p.name].sum():.3g}" for p in providers], rotation=0, fontsize=7
    )
    ax.set_ylabel("per-example influence q·Pg (symlog; > 0 helps)")
    ax.set_title(
        f"TIP: influence of {sum(len(d) for d in data):,} provider examples on the buyer's "
        f"digits MLP (k={k}, decrypted from CKKS)"
    )
    ax.legend(
        handles=[Patch(facecolor=c, edgecolor="black", label=q) for q, c in QUALITY_COLORS.items()],
        loc="upper left",
        bbox_to_anchor=(1.005, 1.0),
        fontsize=8,
        title="quality",
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {
        p.name: {
            "quality": p.quality,
            "sum": float(scores[p.name].sum()),
            "median": float(np.median(scores[p.name])),
        }
        for p in providers
    }
