"""A provider's registered datasets: the local file, its schema, and synthetic mock rows.

Registering reads the file once on the provider's machine and keeps, under
`$MARKET_HOME/datasets/<id>/`, a description (`dataset.json`: columns, types, bounds, row
count, the path of the data) and mock data (`mock.csv`: synthetic rows with the real schema,
drawn column by column from the described marginals, never copied rows). Buyers develop
their proposals against mock data (Mock/Real); the real rows never leave the machine.

`market dataset stake` publishes the public part of the description (no local path, no file
hash) and the mock rows by content address and records the description's `ipfs://` URI on
chain (`LocalDataset.publish_metadata`). Note what it reveals: each numeric column's range,
mean and standard deviation, and each categorical column's category frequencies.

A dataset can also be a model (kind `model`, for ensemble jobs): a fitted scikit-learn style
classifier saved with `joblib` or `pickle` (`.joblib`, `.pkl`, `.pickle`). Its description
names the estimator's class, its class labels, its number of input features and the file's
SHA-256; a model has no mock rows. Loading a model unpickles it, which runs code from the
file: register only model files you made or trust.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from market.home import Home, read_json, write_json

MAX_CATEGORIES = 50

MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle")
"""Files registered as models (kind `model`); every other file is read as a table."""


class DatasetError(Exception):
    """A data file that cannot be registered; the message says why."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    """`int`, `float`, `category` or `text`."""
    lo: float | None = None
    hi: float | None = None
    mean: float | None = None
    std: float | None = None
    categories: dict[str, float] | None = None
    """Category → frequency, for `category` columns."""

    def describe(self) -> str:
        if self.kind in ("int", "float"):
            return f"[{self.lo:g}, {self.hi:g}], mean {self.mean:.4g}, sd {self.std:.4g}"
        if self.kind == "category":
            assert self.categories is not None
            return ", ".join(list(self.categories)[:8]) + ("…" if len(self.categories) > 8 else "")
        return "free text"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


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
            meta["mock"] = mock_uri
        return meta

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
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], directory: Path) -> LocalDataset:
        model = data.get("model")
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


def infer_schema(frame: Any) -> tuple[Column, ...]:
    import pandas as pd

    columns = []
    for name in frame.columns:
        series = frame[name].dropna()
        if pd.api.types.is_bool_dtype(series):
            series = series.astype(int)
        if pd.api.types.is_numeric_dtype(series) and len(series):
            values = series.to_numpy(dtype=np.float64)
            kind = "int" if pd.api.types.is_integer_dtype(series) else "float"
            columns.append(
                Column(
                    str(name),
                    kind,
                    lo=float(values.min()),
                    hi=float(values.max()),
                    mean=float(values.mean()),
                    std=float(values.std()),
                )
            )
            continue
        counts = series.astype(str).value_counts(normalize=True)
        if 0 < len(counts) <= MAX_CATEGORIES:
            freq = {str(k): round(float(v), 6) for k, v in counts.items()}
            columns.append(Column(str(name), "category", categories=freq))
        else:
            columns.append(Column(str(name), "text"))
    if not columns:
        raise DatasetError("the file has no columns")
    return tuple(columns)


def mock_rows(schema: tuple[Column, ...], rows: int, rng: np.random.Generator) -> Any:
    """Synthetic rows with the schema: each column drawn independently from its marginal."""
    import pandas as pd

    data: dict[str, Any] = {}
    for c in schema:
        if c.kind in ("int", "float"):
            assert c.lo is not None and c.hi is not None and c.mean is not None
            values = np.clip(rng.normal(c.mean, c.std or 0.0, rows), c.lo, c.hi)
            data[c.name] = np.round(values).astype(np.int64) if c.kind == "int" else values
        elif c.kind == "category":
            assert c.categories is not None
            names = list(c.categories)
            p = np.array(list(c.categories.values()))
            data[c.name] = rng.choice(names, size=rows, p=p / p.sum())
        else:
            data[c.name] = [f"text-{i}" for i in range(rows)]
    return pd.DataFrame(data)


def is_model_file(path: Path) -> bool:
    """Whether `path` is registered as a model (by its extension, `MODEL_SUFFIXES`)."""
    return path.suffix.lower() in MODEL_SUFFIXES


def inspect_model(path: Path) -> ModelInfo:
    """Load the model file at `path` (unpickling: it runs the file's code) and check that it is
    a fitted classifier whose labels are integers."""
    from compute.node.ensemble import EnsembleJobError, load_model

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
    path: Path, name: str, mock_count: int = 100, home: Home | None = None
) -> LocalDataset:
    """Describe `path` and write its mock rows, or describe a model file (`is_model_file`;
    no mock rows); the same file and name registered again give the same dataset."""
    home = home or Home.default()
    path = path.resolve()
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    for existing in registered_datasets(home):
        if existing.path == path and existing.name == name and existing.sha256 == digest:
            return existing
    if is_model_file(path):
        info = inspect_model(path)
        dataset_id = _new_id(raw)
        directory = home.datasets / dataset_id.hex()
        directory.mkdir(mode=0o700)
        local = LocalDataset(dataset_id, name, path, 0, digest, (), directory, model=info)
        write_json(directory / "dataset.json", local.to_json())
        return local
    frame = read_table(path)
    if len(frame) == 0:
        raise DatasetError(f"{path} has no rows")
    schema = infer_schema(frame)
    dataset_id = _new_id(raw)
    directory = home.datasets / dataset_id.hex()
    directory.mkdir(mode=0o700)
    local = LocalDataset(dataset_id, name, path, len(frame), digest, schema, directory)
    rng = np.random.default_rng(int.from_bytes(dataset_id[:8], "big"))
    tmp = directory / ".mock.csv"
    mock_rows(schema, mock_count, rng).to_csv(tmp, index=False)
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
