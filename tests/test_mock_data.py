"""Mock data that reveals only what its owner chooses (nodes/datasets.py).

The default mock rows must be a function of the declared schema alone: two tables with very
different distributions but the same declarations publish the same schema and identically
distributed mock rows (today's mock, drawn from the real min/max/mean/std and category
frequencies, fails this). DP mock data's marginals must be within the error its metadata
states, computed from the noise scale. OpenDP draws its noise from its own CSPRNG, which
cannot be seeded: the DP test checks a bound that holds with probability 1 - 1e-9 rather
than fixed numbers; the row sampling that follows is seeded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from market.home import Home
from nodes.datasets import (
    DEFAULT_RANGE,
    DP_BINS,
    DatasetError,
    count_error,
    dp_marginals,
    infer_schema,
    parse_bounds,
    parse_categories,
    register_dataset,
    synthetic_rows,
)

BOUNDS = {"bp": (0.0, 250.0), "age": (0.0, 120.0)}
CATEGORIES = {"sex": ("F", "M")}


def _tables(tmp_path: Path, n: int = 3_000) -> tuple[Path, Path]:
    """Two clinics with the same columns and nothing else in common."""
    rng = np.random.default_rng(1)
    low = pd.DataFrame(
        {
            "bp": rng.normal(100, 3, n).round(1),
            "age": rng.integers(20, 25, n),
            "sex": rng.choice(["F", "M"], n, p=[0.97, 0.03]),
            "weight": rng.normal(60, 1, n),
            "note": [f"patient {i}" for i in range(n)],
        }
    )
    high = pd.DataFrame(
        {
            "bp": np.concatenate([rng.normal(220, 10, n - 30), np.full(30, 249.0)]).round(1),
            "age": rng.integers(80, 120, n),
            "sex": rng.choice(["F", "M"], n, p=[0.1, 0.9]),
            "weight": rng.normal(400, 90, n),
            "note": ["x"] * n,
        }
    )
    paths = tmp_path / "low.csv", tmp_path / "high.csv"
    low.to_csv(paths[0], index=False)
    high.to_csv(paths[1], index=False)
    return paths


def _published(local) -> dict:
    meta = local.public_metadata("ipfs://unused")
    del meta["dataset"], meta["name"]
    return meta


def test_default_mock_is_independent_of_the_real_rows(tmp_path: Path):
    home = Home(tmp_path / "home")
    low_path, high_path = _tables(tmp_path)
    kw = {"bounds": BOUNDS, "categories": CATEGORIES, "home": home}
    low = register_dataset(low_path, "low", 2_000, **kw)
    high = register_dataset(high_path, "high", 2_000, **kw)

    # The same published schema and mock description: nothing in them came from the rows
    # (the row count is published, and the two tables have as many rows).
    assert _published(low) == _published(high)
    assert [c.to_json() for c in low.schema] == [
        {"name": "bp", "kind": "float", "lo": 0.0, "hi": 250.0, "origin": "declared"},
        {"name": "age", "kind": "int", "lo": 0.0, "hi": 120.0, "origin": "declared"},
        {"name": "sex", "kind": "category", "categories": ["F", "M"]},
        {"name": "weight", "kind": "float"},  # no bounds declared: a type only
        {"name": "note", "kind": "text"},
    ]
    assert low.mock_spend is None and low.mock_description()["kind"] == "synthetic"

    # With the same random stream, the mock rows are the same rows.
    seeded = [synthetic_rows(d.schema, 500, np.random.default_rng(7)) for d in (low, high)]
    pd.testing.assert_frame_equal(seeded[0], seeded[1])

    # The registered mock rows (each seeded by its random dataset id) are drawn from one
    # distribution: a two-sample KS test finds no difference (false alarm rate 1e-6), while
    # each is far from its table's real values.
    mocks = [pd.read_csv(d.mock_path) for d in (low, high)]
    reals = [pd.read_csv(p) for p in (low_path, high_path)]
    for column in ("bp", "age", "weight"):
        assert stats.ks_2samp(mocks[0][column], mocks[1][column]).pvalue > 1e-6, column
        for mock, real in zip(mocks, reals, strict=True):
            assert stats.ks_2samp(mock[column], real[column]).pvalue < 1e-6, column
    assert mocks[0]["weight"].between(*DEFAULT_RANGE).all()
    assert mocks[0]["bp"].between(0, 250).all() and mocks[0]["age"].between(0, 120).all()
    table = pd.crosstab(
        np.repeat([0, 1], 2_000), np.concatenate([m["sex"].to_numpy() for m in mocks])
    )
    assert stats.chi2_contingency(table).pvalue > 1e-6
    assert not any("patient" in v for v in mocks[0]["note"])


def test_revealed_bounds_are_the_real_range_and_say_so(tmp_path: Path):
    low_path, _ = _tables(tmp_path, 200)
    real = pd.read_csv(low_path)
    local = register_dataset(low_path, "low", 50, Home(tmp_path / "h"), reveal_bounds=True)
    weight = next(c for c in local.schema if c.name == "weight")
    assert (weight.lo, weight.hi, weight.origin) == (real.weight.min(), real.weight.max(), "data")
    assert weight.mean is None and weight.std is None  # a range, never moments


def test_dp_mock_marginals_are_within_the_stated_error(tmp_path: Path):
    rng = np.random.default_rng(3)
    n = 20_000
    # A long tail and an outlier cluster at the top of the declared range, which a mean and
    # a standard deviation would smooth away.
    bp = np.concatenate([rng.lognormal(4.7, 0.25, n - 400), np.full(400, 245.0)])
    frame = pd.DataFrame({"bp": bp, "sex": rng.choice(["F", "M", "X"], n, p=[0.6, 0.39, 0.01])})
    path = tmp_path / "tail.csv"
    frame.to_csv(path, index=False)
    epsilon = 0.5
    schema = infer_schema(frame, {"bp": (0.0, 250.0)}, {"sex": ("F", "M", "X")})
    released = dp_marginals(frame, schema, epsilon)

    # Two columns released together: L1 sensitivity 2, so the discrete Laplace scale is 2/eps.
    assert released["scale"] == pytest.approx(2 / epsilon)
    assert released["epsilon"] == pytest.approx(epsilon) and released["delta"] == 0.0
    bins = DP_BINS + 3
    assert released["count_error"] == pytest.approx(
        released["scale"] * math.log(2 * bins / (1 - 0.95))
    )
    bound = count_error(released["scale"], bins, confidence=1 - 1e-9)
    true_bp, _ = np.histogram(np.clip(bp, 0, 250), bins=DP_BINS, range=(0, 250))
    noisy_bp = np.array(released["marginals"]["bp"]["counts"])
    assert np.abs(noisy_bp - true_bp).max() <= bound
    true_sex = frame.sex.value_counts().reindex(["F", "M", "X"]).to_numpy()
    assert np.abs(np.array(released["marginals"]["sex"]["counts"]) - true_sex).max() <= bound

    # Registered with --mock dp: the metadata says so and what it cost, and mock_spend holds it.
    local = register_dataset(
        path, "tail", n, Home(tmp_path / "h"),
        bounds={"bp": (0.0, 250.0)}, categories={"sex": ("F", "M", "X")},
        mock="dp", mock_epsilon=epsilon,
    )  # fmt: skip
    mock = local.public_metadata("ipfs://unused")["mock"]
    assert mock["kind"] == "dp" and mock["epsilon"] == pytest.approx(epsilon)
    assert local.mock_spend == (pytest.approx(epsilon), 0.0)
    again = json.loads((local.directory / "dataset.json").read_text())
    assert again["mock_spend"] == list(local.mock_spend)

    # The mock rows keep the tail: the share of rows in the top bin (the outliers, 2%) is the
    # real share within the count error plus six binomial standard deviations of sampling.
    rows = pd.read_csv(local.mock_path)
    top = lambda v: float(np.mean(v >= 250 - 250 / DP_BINS))  # noqa: E731
    p = top(bp)
    slack = bound / n + 6 * math.sqrt(p * (1 - p) / n)
    assert abs(top(rows.bp.to_numpy()) - p) <= slack
    assert abs(float(np.mean(rows.sex == "X")) - 0.01) <= bound / n + 6 * math.sqrt(0.01 / n)


def test_declarations_are_checked(tmp_path: Path):
    assert parse_bounds(["bp=0:250", "age=-1:1.5"]) == {"bp": (0.0, 250.0), "age": (-1.0, 1.5)}
    assert parse_categories(["sex=F, M"]) == {"sex": ("F", "M")}
    for bad in (["bp"], ["bp=0"], ["bp=a:b"], ["bp=5:1"], ["bp=0:1", "bp=0:2"], ["=0:1"]):
        with pytest.raises(DatasetError, match="--bounds"):
            parse_bounds(bad)
    for bad in (["sex"], ["sex=F,,M"], ["sex=F,F"]):
        with pytest.raises(DatasetError, match="--categories"):
            parse_categories(bad)
    frame = pd.DataFrame({"bp": [1.0, 2.0], "site": ["a", "b"]})
    with pytest.raises(DatasetError, match="not in the file"):
        infer_schema(frame, {"pulse": (0, 1)})
    with pytest.raises(DatasetError, match="not numeric"):
        infer_schema(frame, {"site": (0, 1)})
    with pytest.raises(DatasetError, match="declare some"):
        dp_marginals(frame, infer_schema(frame), 1.0)
