"""A provider's registered datasets: the local file, its schema, and mock rows.

Registering reads the file once on the provider's machine and keeps, under
`$MARKET_HOME/datasets/<id>/`, a description (`dataset.json`: columns, types, the bounds and
categories the owner declared, row count, the path of the data) and mock data (`mock.csv`).
Buyers develop their proposals against mock data (Mock/Real); the real rows never leave the
machine.

What the description and mock rows reveal is the owner's choice (docs/storage.md, "Mock
data"). By default the schema holds each column's name and type, and the bounds
(`--bounds bp=0:250`) and categories (`--categories sex=F,M`) the owner declared; nothing else
is computed from the real rows except the row count. The mock rows are then synthetic from the
declared schema alone (`synthetic_rows`): each column uniform over its declared range or
categories, or over the public `DEFAULT_RANGE`. Two tables with the same declared schema give
identically distributed mock rows. An owner may opt into more:

- `reveal_bounds`: publish each undeclared numeric column's real minimum and maximum (not
  differentially private; the metadata marks those columns `"origin": "data"`);
- `mock="dp"`: mock rows sampled from differentially private marginals (`dp_marginals`: a
  histogram over `DP_BINS` equal bins of each bounded numeric column and the counts of each
  declared category, under OpenDP's discrete Laplace mechanism at the owner's epsilon), which
  keep long tails and outliers inside the bounds. Its cost is `LocalDataset.mock_spend`, the
  dataset's first spend of its privacy budget.

`market dataset stake` publishes the public part of the description (no local path, no file
hash) and the mock rows by content address and records the description's `ipfs://` URI on
chain (`LocalDataset.publish_metadata`).

A dataset can also be a model (kind `model`, for ensemble jobs): a fitted scikit-learn style
classifier saved with `joblib` or `pickle` (`.joblib`, `.pkl`, `.pickle`). Its description
names the estimator's class, its class labels, its number of input features and the file's
SHA-256; a model has no mock rows. Loading a model unpickles it, which runs code from the
file: register only model files you made or trust.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from market.home import Home, read_json, write_json
from nodes.errors import NodeError

MAX_CATEGORIES = 50
"""At most this many categories may be declared for one column."""

DEFAULT_RANGE = (0.0, 1000.0)
"""Where synthetic mock values of a numeric column without declared bounds are drawn
(uniformly): a fixed public range, the same as `market bounty template`'s default --lo/--hi."""

DP_BINS = 20
"""Equal-width bins of a numeric column's DP histogram (DP mock data)."""

DP_CONFIDENCE = 0.95
"""The published error bound of DP mock marginals holds for all bins at once with this
probability."""

MOCK_KINDS = ("synthetic", "dp")

MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle")
"""Files registered as models (kind `model`); every other file is read as a table."""


class DatasetError(NodeError):
    """A data file that cannot be registered; the message says why."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    """`int`, `float`, `category` or `text`."""
    lo: float | None = None
    hi: float | None = None
    """A numeric column's bounds: declared by the owner, or (`origin` `data`) the real
    minimum and maximum the owner chose to publish; None when neither (type only)."""
    origin: str | None = None
    """Where `lo`/`hi` come from: `declared` or `data`; None without bounds."""
    categories: tuple[str, ...] | dict[str, float] | None = None
    """A `category` column's declared category names. (A dict of category → real frequency
    in descriptions registered before declared schemas; not written any more.)"""
    mean: float | None = None
    std: float | None = None
    """Real statistics in descriptions registered before declared schemas (legacy; read,
    never written)."""

    def __post_init__(self) -> None:
        if isinstance(self.categories, list):
            object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float")

    @property
    def bounded(self) -> bool:
        return self.numeric and self.lo is not None and self.hi is not None

    @property
    def legacy(self) -> bool:
        """Whether this column carries real statistics (registered before declared schemas)."""
        return self.mean is not None or isinstance(self.categories, dict)

    def mock_range(self) -> tuple[float, float]:
        """Where synthetic values of a numeric column are drawn: its bounds, or
        `DEFAULT_RANGE`."""
        if self.lo is not None and self.hi is not None:
            return float(self.lo), float(self.hi)
        return DEFAULT_RANGE

    def describe(self) -> str:
        if self.numeric:
            if self.lo is None or self.hi is None:
                lo, hi = DEFAULT_RANGE
                return f"no bounds declared (mock values in [{lo:g}, {hi:g}])"
            text = f"[{self.lo:g}, {self.hi:g}]"
            if self.legacy:
                return f"{text}, mean {self.mean:.4g}, sd {self.std:.4g} (real, published)"
            return text + (" (the data's real range, published)" if self.origin == "data" else "")
        if self.kind == "category":
            assert self.categories is not None
            names = list(self.categories)
            return ", ".join(names[:8]) + ("…" if len(names) > 8 else "")
        return "free text"

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if v is not None}
        if isinstance(self.categories, tuple):
            data["categories"] = list(self.categories)
        return data


@dataclass(frozen=True)
class ModelInfo:
    """What registering a model file found: a fitted classifier with integer labels."""

    estimator: str
    """The estimator's class name (`RandomForestClassifier`, `Pipeline`, ...)."""
    classes: tuple[int, ...]
    """Its `classes_`, the labels of its `predict_proba` columns."""
    n_features: int | None = None
    """Its `n_features_in_`, when the estimator records it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "classes": list(self.classes),
            "n_features": self.n_features,
        }


@dataclass(frozen=True)
class LocalDataset:
    dataset_id: bytes
    name: str
    path: Path
    rows: int
    """The table's rows (0 for a model)."""
    sha256: str
    schema: tuple[Column, ...]
    directory: Path
    model: ModelInfo | None = None
    """Set for a model dataset (kind `model`); a table has None."""
    mock_spend: tuple[float, float] | None = None
    """The (epsilon, delta) that making the mock rows spent of the real rows' privacy, when
    the owner chose DP mock data (`mock="dp"`); None for synthetic mock rows, which spend
    nothing. The dataset's budget ledger counts it as the first spend."""
    mock_info: Mapping[str, Any] | None = field(default=None, compare=False)
    """What the metadata says about the mock rows (`mock_description`): kind, cost, rows,
    and for DP mock data the noisy marginals and their error bound."""

    @property
    def kind(self) -> str:
        """`table` (CSV or Parquet rows) or `model` (a fitted classifier, ensemble jobs)."""
        return "table" if self.model is None else "model"

    @property
    def mock_path(self) -> Path:
        return self.directory / "mock.csv"

    @property
    def metadata_uri(self) -> str:
        """The `ipfs://` URI `market dataset stake` records on chain: `publish_metadata()`
        (content-addressed, so publishing again gives the same URI)."""
        return self.publish_metadata()

    def public_metadata(self, mock_uri: str | None = None) -> dict[str, Any]:
        """The description anyone may read: id, name, kind, rows and schema (or the model's
        estimator, classes and features), and the mock rows' URI. Nothing of this machine's
        (the data's path, its file's SHA-256, local paths) is in it."""
        meta: dict[str, Any] = {
            "dataset": "0x" + self.dataset_id.hex(),
            "name": self.name,
            "kind": self.kind,
        }
        if self.model is not None:
            meta["model"] = self.model.to_json()
        else:
            meta["rows"] = self.rows
            meta["schema"] = [c.to_json() for c in self.schema]
            meta["mock"] = {**self.mock_description(), "uri": mock_uri}
        return meta

    def mock_description(self) -> dict[str, Any]:
        """Which kind of mock data this is and what it cost: `{"kind": "synthetic"|"dp",
        "epsilon", "delta", "rows", ...}` (a DP mock adds its noisy marginals, noise scale and
        error bound). A description registered before declared schemas says `"marginals"`:
        mock rows drawn from the real marginals, without DP."""
        if self.mock_info is not None:
            return dict(self.mock_info)
        legacy = any(c.legacy for c in self.schema)
        return {"kind": "marginals" if legacy else "synthetic", "epsilon": None, "delta": None}

    def publish_metadata(self, storage: Any = None) -> str:
        """Put the public description (`public_metadata`) and, for a table, its mock rows in
        content-addressed storage (`market.storage.open_storage()` unless `storage`); the
        description's `ipfs://` URI, which any node fetches and checks against its address."""
        from market.escrow.documents import canonical_json
        from market.storage import open_storage, uri_for

        store = storage if storage is not None else open_storage()
        mock = None
        if self.model is None and self.mock_path.exists():
            mock = uri_for(store.put(self.mock_path.read_bytes()))
        return uri_for(store.put(canonical_json(self.public_metadata(mock))))

    def to_json(self) -> dict[str, Any]:
        if self.model is not None:
            return {
                "dataset": "0x" + self.dataset_id.hex(),
                "name": self.name,
                "kind": self.kind,
                "path": str(self.path),
                "sha256": self.sha256,
                "model": self.model.to_json(),
            }
        return {
            "dataset": "0x" + self.dataset_id.hex(),
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path),
            "rows": self.rows,
            "sha256": self.sha256,
            "schema": [c.to_json() for c in self.schema],
            "mock": str(self.mock_path),
            "mock_info": self.mock_description(),
            "mock_spend": list(self.mock_spend) if self.mock_spend is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], directory: Path) -> LocalDataset:
        model = data.get("model")
        spend = data.get("mock_spend")  # absent in descriptions older than DP mock data
        return cls(
            dataset_id=bytes.fromhex(data["dataset"].removeprefix("0x")),
            name=data["name"],
            path=Path(data["path"]),
            rows=int(data.get("rows", 0)),
            sha256=data["sha256"],
            schema=tuple(Column(**c) for c in data.get("schema", ())),
            directory=directory,
            model=(
                ModelInfo(model["estimator"], tuple(model["classes"]), model.get("n_features"))
                if model is not None
                else None
            ),
            mock_spend=(float(spend[0]), float(spend[1])) if spend is not None else None,
            mock_info=data.get("mock_info"),
        )


def read_table(path: Path) -> Any:
    """The file as a pandas DataFrame (CSV, or Parquet by extension)."""
    import pandas as pd

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except DatasetError:
        raise
    except Exception as exc:  # pandas raises many types for unreadable files
        raise DatasetError(f"cannot read {path} as a table: {exc}") from None


def parse_bounds(specs: Sequence[str]) -> dict[str, tuple[float, float]]:
    """`["bp=0:250", "age=0:120"]` → `{"bp": (0.0, 250.0), ...}`; `DatasetError` says what
    is wrong with a malformed one."""
    bounds: dict[str, tuple[float, float]] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        lo_text, colon, hi_text = rest.partition(":")
        try:
            lo, hi = float(lo_text), float(hi_text)
        except ValueError:
            lo = hi = math.nan
        if not (sep and colon and name.strip()) or not (math.isfinite(lo) and math.isfinite(hi)):
            raise DatasetError(
                f"--bounds {spec!r}: expected COLUMN=LO:HI with finite numbers, e.g. bp=0:250"
            )
        if not lo < hi:
            raise DatasetError(f"--bounds {spec!r}: LO must be below HI")
        if name.strip() in bounds:
            raise DatasetError(f"--bounds: {name.strip()!r} is declared twice")
        bounds[name.strip()] = (lo, hi)
    return bounds


def parse_categories(specs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """`["sex=F,M"]` → `{"sex": ("F", "M")}`; `DatasetError` for a malformed one."""
    declared: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        names = tuple(c.strip() for c in rest.split(","))
        if not (sep and name.strip()) or not all(names):
            raise DatasetError(
                f"--categories {spec!r}: expected COLUMN=A,B,... with non-empty names, e.g. sex=F,M"
            )
        if len(set(names)) != len(names) or len(names) > MAX_CATEGORIES:
            raise DatasetError(
                f"--categories {spec!r}: give distinct names, at most {MAX_CATEGORIES}"
            )
        if name.strip() in declared:
            raise DatasetError(f"--categories: {name.strip()!r} is declared twice")
        declared[name.strip()] = names
    return declared


def infer_schema(
    frame: Any,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    categories: Mapping[str, Sequence[str]] | None = None,
    reveal_bounds: bool = False,
) -> tuple[Column, ...]:
    """The schema to publish: each column's name and type (`int`/`float` by its dtype,
    `category` when declared, else `text`), the declared `bounds` and `categories`, and no
    statistic of the rows, unless `reveal_bounds`: then numeric columns without declared
    bounds get their real minimum and maximum (`origin` `data`, not differentially private)."""
    import pandas as pd

    bounds = dict(bounds or {})
    categories = dict(categories or {})
    names = [str(n) for n in frame.columns]
    unknown = sorted((set(bounds) | set(categories)) - set(names))
    if unknown:
        raise DatasetError(
            f"declared column(s) {', '.join(unknown)} are not in the file, whose columns are "
            f"{', '.join(names)}"
        )
    both = sorted(set(bounds) & set(categories))
    if both:
        raise DatasetError(f"{', '.join(both)}: declare either --bounds or --categories, not both")
    columns = []
    for name, label in zip(frame.columns, names, strict=True):
        series = frame[name]
        if pd.api.types.is_bool_dtype(series):
            series = series.astype(int)
        numeric = pd.api.types.is_numeric_dtype(series)
        if label in categories:
            columns.append(Column(label, "category", categories=tuple(categories[label])))
        elif not numeric:
            if label in bounds:
                raise DatasetError(
                    f"--bounds {label}: the column is not numeric; declare its values with "
                    f"--categories {label}=A,B,..."
                )
            columns.append(Column(label, "text"))
        else:
            kind = "int" if pd.api.types.is_integer_dtype(series) else "float"
            values = series.dropna().to_numpy(dtype=np.float64)
            if label in bounds:
                lo, hi = bounds[label]
                columns.append(Column(label, kind, lo=lo, hi=hi, origin="declared"))
            elif reveal_bounds and len(values) and values.min() < values.max():
                lo, hi = float(values.min()), float(values.max())
                columns.append(Column(label, kind, lo=lo, hi=hi, origin="data"))
            else:
                columns.append(Column(label, kind))
    if not columns:
        raise DatasetError("the file has no columns")
    return tuple(columns)


def synthetic_rows(schema: Sequence[Column], rows: int, rng: np.random.Generator) -> Any:
    """Mock rows from the declared schema alone: each column independent and uniform over its
    bounds (or `DEFAULT_RANGE`) or its categories; text columns `text-0`, `text-1`, ...
    Nothing here depends on the real rows beyond the schema."""
    import pandas as pd

    data: dict[str, Any] = {}
    for c in schema:
        if c.numeric:
            lo, hi = c.mock_range()
            if c.kind == "int" and math.ceil(lo) <= math.floor(hi):
                data[c.name] = rng.integers(math.ceil(lo), math.floor(hi) + 1, rows)
            else:
                values = rng.uniform(lo, hi, rows)
                data[c.name] = np.round(values).astype(np.int64) if c.kind == "int" else values
        elif c.kind == "category":
            assert c.categories is not None
            data[c.name] = rng.choice(list(c.categories), size=rows)
        else:
            data[c.name] = [f"text-{i}" for i in range(rows)]
    return pd.DataFrame(data)


def _dp_columns(schema: Sequence[Column]) -> list[Column]:
    """The columns a DP mock estimates: bounded numeric ones and declared categories."""
    return [c for c in schema if c.bounded or (c.kind == "category" and c.categories)]


def _true_counts(frame: Any, column: Column) -> np.ndarray:
    """The real rows' histogram of `column`: over `DP_BINS` equal bins of its bounds (values
    clipped to them), or one count per declared category (other values and missing ones are
    not counted)."""
    series = frame[column.name].dropna()
    if column.kind == "category":
        assert column.categories is not None
        text = series.astype(str)
        return np.array([int((text == c).sum()) for c in column.categories], dtype=np.int64)
    assert column.lo is not None and column.hi is not None
    values = np.clip(series.to_numpy(dtype=np.float64), column.lo, column.hi)
    counts, _ = np.histogram(values, bins=DP_BINS, range=(column.lo, column.hi))
    return counts.astype(np.int64)


def count_error(scale: float, bins: int, confidence: float = DP_CONFIDENCE) -> float:
    """The bound every noisy count of a DP mock is within, at once, with probability at least
    `confidence`: the discrete Laplace of scale b has P(|Z| >= t) = 2q^t/(1+q) < 2e^(-t/b)
    (q = e^(-1/b)), so over `bins` counts the union bound gives t = b ln(2 bins / (1 -
    confidence))."""
    return scale * math.log(2 * bins / (1 - confidence))


def dp_marginals(frame: Any, schema: Sequence[Column], epsilon: float) -> dict[str, Any]:
    """Differentially private marginals of the real rows, as the DP mock publishes them.

    One histogram per bounded numeric column (`DP_BINS` equal bins over its bounds) and one
    count per declared category of each category column, all released together by OpenDP's
    discrete Laplace mechanism (`make_laplace` on integer vectors). Adding or removing one row
    changes one count of each of the k columns by one, so the L1 sensitivity is k and the
    scale is k / epsilon; the epsilon reported is OpenDP's privacy map at sensitivity k (delta
    0: pure DP). Row count and bounds are not estimated (the schema has them)."""
    import opendp.domains as dp_domains
    import opendp.measurements as dp_m
    import opendp.metrics as dp_metrics
    import opendp.mod as dp_mod

    if not (math.isfinite(epsilon) and epsilon > 0):
        raise DatasetError(f"--mock-epsilon must be positive and finite, got {epsilon!r}")
    columns = _dp_columns(schema)
    if not columns:
        raise DatasetError(
            "DP mock data estimates the marginals of declared columns: declare some with "
            "--bounds COLUMN=LO:HI or --categories COLUMN=A,B,..."
        )
    counts = [_true_counts(frame, c) for c in columns]
    dp_mod.enable_features("contrib")
    sensitivity = len(columns)
    scale = sensitivity / epsilon
    measurement = dp_m.make_laplace(
        dp_domains.vector_domain(dp_domains.atom_domain(T="i64")),
        dp_metrics.l1_distance(T="i64"),
        scale=scale,
    )
    noisy = iter(measurement([int(v) for part in counts for v in part]))
    marginals = {}
    for c, part in zip(columns, counts, strict=True):
        released = [int(next(noisy)) for _ in part]
        if c.kind == "category":
            assert c.categories is not None
            marginals[c.name] = {"categories": list(c.categories), "counts": released}
        else:
            assert c.lo is not None and c.hi is not None
            edges = np.linspace(c.lo, c.hi, DP_BINS + 1)
            marginals[c.name] = {"edges": [float(e) for e in edges], "counts": released}
    bins = sum(len(part) for part in counts)
    return {
        "kind": "dp",
        "epsilon": float(measurement.map(sensitivity)),
        "delta": 0.0,
        "mechanism": "discrete laplace (OpenDP make_laplace)",
        "unit": "one row",
        "scale": scale,
        "count_error": count_error(scale, bins),
        "confidence": DP_CONFIDENCE,
        "marginals": marginals,
    }


def dp_rows(
    schema: Sequence[Column], marginals: Mapping[str, Any], rows: int, rng: np.random.Generator
) -> Any:
    """Mock rows sampled from DP marginals (`dp_marginals`): each estimated column drawn
    independently, a bin or category with probability proportional to its noisy count (below
    zero counts as zero), then uniformly inside its bin, so a tail or an outlier bin keeps its
    mass; the other columns as `synthetic_rows`. Post-processing: it spends nothing more."""
    frame = synthetic_rows(schema, rows, rng)
    for c in schema:
        marginal = marginals.get(c.name)
        if marginal is None:
            continue
        weights = np.maximum(np.asarray(marginal["counts"], dtype=np.float64), 0.0)
        if weights.sum() == 0:
            weights = np.ones_like(weights)
        picks = rng.choice(len(weights), size=rows, p=weights / weights.sum())
        if c.kind == "category":
            frame[c.name] = np.asarray(marginal["categories"])[picks]
            continue
        edges = np.asarray(marginal["edges"], dtype=np.float64)
        values = rng.uniform(edges[picks], edges[picks + 1])
        if c.kind == "int":
            assert c.lo is not None and c.hi is not None
            lo, hi = math.ceil(c.lo), math.floor(c.hi)
            values = np.clip(np.floor(values), lo, max(lo, hi)).astype(np.int64)
        frame[c.name] = values
    return frame


def is_model_file(path: Path) -> bool:
    """Whether `path` is registered as a model (by its extension, `MODEL_SUFFIXES`)."""
    return path.suffix.lower() in MODEL_SUFFIXES


def inspect_model(path: Path) -> ModelInfo:
    """Load the model file at `path` (unpickling: it runs the file's code) and check that it is
    a fitted classifier whose labels are integers."""
    from nodes.evalset import EnsembleJobError, load_model

    try:
        model = load_model(path)()
    except EnsembleJobError as exc:
        cause = exc.__context__  # what joblib raised (the loader hides it behind its message)
        reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        raise DatasetError(
            f"cannot load the model {path} ({reason}); a model file is a fitted classifier "
            "saved with joblib.dump or pickle.dump"
        ) from None
    estimator = type(model).__name__
    if not callable(getattr(model, "predict_proba", None)):
        raise DatasetError(
            f"{path} holds a {estimator}, which has no predict_proba; register a fitted "
            "scikit-learn style classifier (e.g. LogisticRegression, RandomForestClassifier)"
        )
    if not hasattr(model, "classes_"):
        raise DatasetError(f"{path} holds a {estimator} without classes_: fit it before saving it")
    labels = np.asarray(model.classes_)
    integral = labels.dtype.kind in "iu" or (
        labels.dtype.kind == "f" and bool(np.all(np.isfinite(labels) & (labels == labels // 1)))
    )
    if labels.ndim != 1 or labels.size == 0 or not integral:
        raise DatasetError(
            f"{path}: the {estimator}'s classes_ must be integer labels 0, 1, ..., got "
            f"{labels.tolist()[:10]!r}; fit it on integer-encoded labels"
        )
    classes = tuple(int(c) for c in labels)
    if min(classes) < 0 or len(set(classes)) != len(classes):
        raise DatasetError(
            f"{path}: the {estimator}'s classes_ must be distinct labels >= 0, got "
            f"{list(classes)[:10]}"
        )
    features = getattr(model, "n_features_in_", None)
    return ModelInfo(estimator, classes, int(features) if features is not None else None)


def register_dataset(
    path: Path,
    name: str,
    mock_count: int = 100,
    home: Home | None = None,
    *,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    categories: Mapping[str, Sequence[str]] | None = None,
    reveal_bounds: bool = False,
    mock: str = "synthetic",
    mock_epsilon: float | None = None,
) -> LocalDataset:
    """Describe `path` and write its mock rows, or describe a model file (`is_model_file`;
    no mock rows); the same file, name and declarations registered again give the same
    dataset (and spend nothing again).

    The schema holds the declared `bounds` and `categories` (`infer_schema`); `mock` is
    `synthetic` (from the schema alone, the default) or `dp` (from DP marginals at
    `mock_epsilon`, which is the dataset's `mock_spend`)."""
    home = home or Home.default()
    path = path.resolve()
    if mock not in MOCK_KINDS:
        raise DatasetError(f"--mock must be one of {', '.join(MOCK_KINDS)}, got {mock!r}")
    if mock == "dp" and mock_epsilon is None:
        raise DatasetError("--mock dp needs --mock-epsilon, the privacy the mock data spends")
    if mock != "dp" and mock_epsilon is not None:
        raise DatasetError("--mock-epsilon applies to --mock dp only")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    model_file = is_model_file(path)
    if model_file and (bounds or categories or reveal_bounds or mock != "synthetic"):
        raise DatasetError(
            f"{path.name} is a model: bounds, categories and mock options apply to tables only"
        )
    frame = None if model_file else read_table(path)
    if frame is not None and len(frame) == 0:
        raise DatasetError(f"{path} has no rows")
    schema = () if frame is None else infer_schema(frame, bounds, categories, reveal_bounds)
    for existing in registered_datasets(home):
        if existing.path == path and existing.name == name and existing.sha256 == digest:
            kind = existing.mock_description().get("kind")
            if existing.schema == schema and (existing.model is not None or kind == mock):
                return existing
            raise DatasetError(
                f"{path.name} is already registered as {name!r} with another schema or mock "
                "data; register it under another --name (a staked dataset's metadata does not "
                "change)"
            )
    if frame is None:
        info = inspect_model(path)
        dataset_id = _new_id(raw)
        directory = home.datasets / dataset_id.hex()
        directory.mkdir(mode=0o700)
        local = LocalDataset(dataset_id, name, path, 0, digest, (), directory, model=info)
        write_json(directory / "dataset.json", local.to_json())
        return local
    dataset_id = _new_id(raw)
    rng = np.random.default_rng(int.from_bytes(dataset_id[:8], "big"))
    if mock == "dp":
        assert mock_epsilon is not None
        description = dp_marginals(frame, schema, mock_epsilon)
        rows = dp_rows(schema, description["marginals"], mock_count, rng)
        spend: tuple[float, float] | None = (description["epsilon"], description["delta"])
    else:
        description = {"kind": "synthetic", "epsilon": 0.0, "delta": 0.0}
        rows = synthetic_rows(schema, mock_count, rng)
        spend = None
    description["rows"] = mock_count
    directory = home.datasets / dataset_id.hex()
    directory.mkdir(mode=0o700)
    local = LocalDataset(
        dataset_id, name, path, len(frame), digest, schema, directory,
        mock_spend=spend, mock_info=description,
    )  # fmt: skip
    tmp = directory / ".mock.csv"
    rows.to_csv(tmp, index=False)
    os.replace(tmp, local.mock_path)
    write_json(directory / "dataset.json", local.to_json())
    return local


def _new_id(raw: bytes) -> bytes:
    return hashlib.sha3_256(b"market/dataset" + secrets.token_bytes(32) + raw).digest()


def registered_datasets(home: Home | None = None) -> list[LocalDataset]:
    home = home or Home.default()
    found = []
    for entry in sorted(home.datasets.iterdir()):
        meta = entry / "dataset.json"
        if meta.exists():
            found.append(LocalDataset.from_json(read_json(meta), entry))
    return found
