"""`market demo --audit` through the installed entry point: four platforms' impression logs with
Zipf item popularity; the secure Gini and top-10% share equal the plaintext union's within the
error bound the job's stated DP noise scale gives, beside the ratios to the baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compute import postprocess as pp

MARKET = str(Path(sys.executable).with_name("market"))


@pytest.mark.slow
def test_audit_demo_secure_figures_equal_the_plaintext_union_within_the_dp_bound() -> None:
    proc = subprocess.run([MARKET, "demo", "--audit", "--seed", "11", "--json"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["state"] == "FINALIZED" and report["providers"] == 4
    plain = np.array(report["plain_counts"])
    secure = np.array(report["secure_counts"])
    assert plain.sum() == sum(report["impressions"].values())  # every impression is one item's
    assert plain[0] > 5 * np.median(plain)  # heavy-tailed: the top item dwarfs the median one
    # The bound from the stated noise: all of epsilon on the counts (category counts are never
    # clipped, so no clipped count shares it), sensitivity 1 per count, each of the heavy
    # nodes' discrete Laplace noise at that scale.
    assert report["mechanism"] == "laplace" and report["noise_scale"] == pytest.approx(1.0)
    l1 = pp.noise_l1_bound(plain.size * report["noise_shares"], report["noise_scale"])
    bound = pp.figure_error_bound(l1, float(np.maximum(secure, 0).sum()))
    assert report["error_bound"] == pytest.approx(bound) and bound < 0.1
    assert np.abs(secure - plain).sum() <= l1  # the noise itself stays within its bound
    assert report["plain"]["gini"]["gini"] == pytest.approx(pp.gini(plain))
    assert 0.4 < report["plain"]["gini"]["gini"] < 0.9
    assert abs(report["secure"]["gini"]["gini"] - report["plain"]["gini"]["gini"]) <= bound
    top_secure, top_plain = report["secure"]["top_share"], report["plain"]["top_share"]
    assert top_secure["groups"] == top_plain["groups"] == 4  # 10% of 40 items
    assert top_plain["share"] == pytest.approx(np.sort(plain)[::-1][:4].sum() / plain.sum())
    assert abs(top_secure["share"] - top_plain["share"]) <= bound
    # The ratios to the published baseline, from the released counts and from the union.
    baseline = report["baseline"]
    assert sum(baseline.values()) == pytest.approx(1.0)
    ratios = report["secure"]["baseline_ratio"]["ratios"]
    expected = pp.baseline_ratio(secure, [baseline[i] for i in report["items"]])
    assert [ratios[i] for i in report["items"]] == pytest.approx(expected.tolist())
    plain_ratios = report["plain"]["baseline_ratio"]["ratios"]
    top = report["items"][0]
    assert ratios[top] == pytest.approx(plain_ratios[top], rel=0.05)
