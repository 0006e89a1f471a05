"""Real data for valuation: scikit-learn's bundled digits, breast-cancer, wine and iris sets (no
download), split between a buyer and providers of different quality.

`make_market` shuffles a data set with a seed, gives the buyer a training and an evaluation
split, and cuts the rest (the pool) into one disjoint part per provider. A provider's part is
then degraded according to its quality:

- `clean`: as is;
- `noisy`: a fraction `level` of its labels replaced by uniformly random labels;
- `flipped`: a fraction `level` of its labels moved to the next class, `y -> (y + 1) % C` (for
  two classes: every such label inverted);
- `shifted`: covariate shift, every feature moved by `level` of its standard deviation in a
  direction (sign) drawn per provider, plus Gaussian noise of `level / 2` standard deviations;
- `duplicated`: only `max(1, level * size)` distinct rows, repeated to fill its size.

When a provider must hold more rows than its part of the pool (`examples` asks for more than
the data set has: digits has 1,797 rows, breast cancer 569), its part is resampled with
replacement and every extra copy gets a small Gaussian jitter (`jitter` standard deviations per
feature), so that 10,000 provider examples can be built from digits. Features are standardized
with the mean and standard deviation of the buyer's training split, the preprocessing the buyer
publishes with its model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from market.valuation.tip.errors import InvalidParamsError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

DATASETS = ("digits", "breast_cancer", "wine", "iris")
QUALITIES = ("clean", "noisy", "flipped", "shifted", "duplicated")


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    quality: str
    level: float = 0.0

    def __post_init__(self) -> None:
        if self.quality not in QUALITIES:
            raise InvalidParamsError(f"quality must be one of {QUALITIES}, got {self.quality!r}")


DEFAULT_PROVIDERS = (
    ProviderSpec("clean", "clean"),
    ProviderSpec("noisy", "noisy", 0.4),
    ProviderSpec("flipped", "flipped", 1.0),
    ProviderSpec("shifted", "shifted", 1.5),
    ProviderSpec("duplicated", "duplicated", 0.05),
)
"""One provider of each quality."""

BENCH_PROVIDERS = (
    ProviderSpec("clean-a", "clean"),
    ProviderSpec("clean-b", "clean"),
    ProviderSpec("noisy-20", "noisy", 0.2),
    ProviderSpec("noisy-60", "noisy", 0.6),
    ProviderSpec("flipped-30", "flipped", 0.3),
    ProviderSpec("flipped-100", "flipped", 1.0),
    ProviderSpec("shifted-1", "shifted", 1.0),
    ProviderSpec("shifted-3", "shifted", 3.0),
    ProviderSpec("duplicated-20", "duplicated", 0.2),
    ProviderSpec("duplicated-2", "duplicated", 0.02),
)
"""Ten providers, two levels of each quality: the benchmark's market."""


@dataclass
class ProviderData:
    name: str
    quality: str
    level: float
    x: FloatArray
    y: IntArray

    @property
    def size(self) -> int:
        return len(self.y)


@dataclass
class Market:
    """A buyer's splits and the providers' data, all standardized the buyer's way."""

    dataset: str
    n_classes: int
    train: tuple[FloatArray, IntArray]
    eval: tuple[FloatArray, IntArray]
    providers: list[ProviderData]
    mean: FloatArray
    scale: FloatArray
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.train[0].shape[1])

    def provider(self, name: str) -> ProviderData:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


def load(dataset: str) -> tuple[FloatArray, IntArray, int]:
    """Features (float64), labels (int64) and class count of a bundled scikit-learn data set."""
    from sklearn import datasets

    if dataset == "digits":
        bunch = datasets.load_digits()
    elif dataset == "breast_cancer":
        bunch = datasets.load_breast_cancer()
    elif dataset == "wine":
        bunch = datasets.load_wine()
    elif dataset == "iris":
        bunch = datasets.load_iris()
    else:
        raise InvalidParamsError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    y = np.asarray(bunch.target, dtype=np.int64)
    return np.asarray(bunch.data, dtype=np.float64), y, int(y.max()) + 1


def make_market(
    dataset: str = "digits",
    providers: tuple[ProviderSpec, ...] = DEFAULT_PROVIDERS,
    *,
    buyer_train: int | None = None,
    buyer_eval: int | None = None,
    examples: int | None = None,
    jitter: float = 0.1,
    seed: int = 0,
) -> Market:
    """Split `dataset` between a buyer and `providers` (see the module docstring).

    `buyer_train` and `buyer_eval` default to 15% and 20% of the rows. `examples` is the total
    number of provider rows (split evenly, the first providers taking one more when it does not
    divide); by default each provider keeps just its disjoint part of the pool."""
    x_raw, y_all, n_classes = load(dataset)
    rng = np.random.Generator(np.random.Philox(seed))
    order = rng.permutation(len(y_all))
    n_train = buyer_train if buyer_train is not None else int(0.15 * len(y_all))
    n_eval = buyer_eval if buyer_eval is not None else int(0.20 * len(y_all))
    pool = order[n_train + n_eval :]
    if n_train < n_classes or n_eval < 1 or len(pool) < len(providers):
        raise InvalidParamsError(
            f"{dataset} has {len(y_all)} rows: too few for a buyer of {n_train}+{n_eval} and "
            f"{len(providers)} providers"
        )
    train_idx, eval_idx = order[:n_train], order[n_train : n_train + n_eval]
    raw_std = x_raw[train_idx].std(axis=0)
    mean = x_raw[train_idx].mean(axis=0)
    scale = np.where(raw_std > 0, raw_std, 1.0)

    def standardize(x: FloatArray) -> FloatArray:
        return (x - mean) / scale

    parts = np.array_split(pool, len(providers))
    if examples is None:
        sizes = [len(part) for part in parts]
    else:
        base, extra = divmod(examples, len(providers))
        sizes = [base + (i < extra) for i in range(len(providers))]
    out = []
    for i, (spec, part, size) in enumerate(zip(providers, parts, sizes, strict=True)):
        prng = np.random.Generator(np.random.Philox([seed, i + 1]))
        x, y = _fill(x_raw[part], y_all[part], size, jitter * scale, prng)
        x, y = _degrade(spec, x, y, n_classes, scale, prng)
        out.append(ProviderData(spec.name, spec.quality, spec.level, standardize(x), y))
    notes = {
        "rows": len(y_all),
        "buyer_train": n_train,
        "buyer_eval": n_eval,
        "pool": len(pool),
        "provider_rows": sizes,
        "jitter_std": jitter if examples is not None and examples > len(pool) else 0.0,
    }
    return Market(
        dataset=dataset,
        n_classes=n_classes,
        train=(standardize(x_raw[train_idx]), y_all[train_idx]),
        eval=(standardize(x_raw[eval_idx]), y_all[eval_idx]),
        providers=out,
        mean=mean,
        scale=scale,
        notes=notes,
    )


def _fill(
    x: FloatArray, y: IntArray, size: int, jitter: FloatArray, rng: np.random.Generator
) -> tuple[FloatArray, IntArray]:
    """`size` rows from a part: the part itself (truncated), or the part plus jittered copies."""
    if size <= len(y):
        return x[:size].copy(), y[:size].copy()
    picks = rng.integers(0, len(y), size - len(y))
    copies = x[picks] + rng.standard_normal((len(picks), x.shape[1])) * jitter
    return np.concatenate([x, copies]), np.concatenate([y, y[picks]])


def _degrade(
    spec: ProviderSpec,
    x: FloatArray,
    y: IntArray,
    n_classes: int,
    scale: FloatArray,
    rng: np.random.Generator,
) -> tuple[FloatArray, IntArray]:
    n = len(y)
    x, y = x.copy(), y.copy()
    if spec.quality == "noisy":
        hit = rng.random(n) < spec.level
        y[hit] = rng.integers(0, n_classes, int(hit.sum()))
    elif spec.quality == "flipped":
        hit = rng.random(n) < spec.level
        y[hit] = (y[hit] + 1) % n_classes
    elif spec.quality == "shifted":
        signs = rng.choice([-1.0, 1.0], size=x.shape[1])
        x = x + spec.level * scale * signs
        x = x + rng.standard_normal(x.shape) * (spec.level / 2) * scale
    elif spec.quality == "duplicated":
        distinct = max(1, int(round(spec.level * n)))
        idx = np.arange(n) % distinct
        x, y = x[idx], y[idx]
    return x, y
