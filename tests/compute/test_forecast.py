"""The forecast kind: its terms, the scores under sharing against numpy, and the payout rule in
integers."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from compute.errors import UnexpectedEventError
from compute.kinds.forecast import PREDICTION_FIELD, ForecastSpec, settle_scores
from compute.maps import run_map
from compute.messages import CloseSubmissions, Result
from compute.proposal import ProposalError, parse_proposal
from compute.round import HeavyNodeRound, LightNodeRound
from compute.scoring import standardize
from compute.simulation import simulate_round

TOKEN = 10**18


def proposal(scheme: str = "shamir", **forecast: object) -> dict:
    terms = {"targets": 200, "resolution_time": 2_000, "payout_factor": 2.0, "cap_bps": 2_000}
    terms.update(forecast)
    return {
        "version": 1,
        "kind": "forecast",
        "title": "Next month's returns",
        "map": {},
        "reduce": {"scheme": scheme, "threat_model": "semi-honest"},
        "privacy": {"min_participants": 2},
        "economics": {"budget": 1_000 * TOKEN, "fee_bps": 500, "max_slash_bps": 2_000},
        "deadline": 1_000,
        "committee_size": 3,
        "quorum": 2,
        "forecast": terms,
    }


def test_the_kind_fills_in_its_fixed_parts():
    p = parse_proposal(proposal())
    assert (p.map.function, p.reduce.op, p.economics.payout_rule) == (
        "standardized_predictions", "sum", "forecast_score",
    )  # fmt: skip
    assert p.reduction().width == 200


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"resolution_time": 999}, "forecast.resolution_time", "before the deadline"),
        ({"cap_bps": 2_001}, "forecast.cap_bps", "max_slash_bps"),
        ({"targets": 1}, "forecast.targets", "greater than or equal to 2"),
        ({"outcome_source": "http://x"}, "forecast.outcome_source", "https://"),
    ],
)
def test_bad_terms_are_refused_naming_the_field(change, path, words):
    with pytest.raises(ProposalError) as error:
        parse_proposal(proposal(**change))
    assert path in str(error.value) and words in str(error.value)


def test_the_fixed_parts_may_not_change():
    raw = proposal()
    raw["map"] = {"function": "column_values", "output": {"fields": []}}
    with pytest.raises(ProposalError, match="map.function: kind 'forecast' fixes this"):
        parse_proposal(raw)


def test_resolution_at_the_deadline_is_allowed():
    assert parse_proposal(proposal(resolution_time=1_000)).forecast.resolution_time == 1_000


def test_the_map_standardizes_in_target_order():
    p = parse_proposal(proposal(targets=4))
    frame = pd.DataFrame({"target": [3, 1, 2, 0], "prediction": [4.0, 2.0, 3.0, 1.0]})
    records, report = run_map(p, frame)
    assert records.shape == (1, 4)
    np.testing.assert_allclose(records[0], standardize([1.0, 2.0, 3.0, 4.0]))
    assert report.rows_used == 4


@pytest.mark.parametrize("scheme", ["shamir", "additive"])
def test_scores_under_sharing_are_each_holders_correlation(scheme):
    rng = np.random.default_rng(7)
    p = parse_proposal(proposal(scheme))
    outcomes = rng.normal(size=200)
    raw = {
        "skilled": outcomes + rng.normal(scale=0.5, size=200),
        "random": rng.normal(size=200),
        "adversarial": -outcomes + rng.normal(scale=0.3, size=200),
    }
    records = {d: standardize(v).reshape(1, -1) for d, v in raw.items()}
    config = p.round_config("7", outcomes=list(outcomes))
    outcomes_by_node = simulate_round(config, records, np.random.default_rng(1))
    assert len(outcomes_by_node) == 3
    result = outcomes_by_node[1]
    assert isinstance(result, Result)
    plan = config.scoring
    # Exactly the integer scores of the encoded predictions, and within the fixed point's
    # precision (each value to 2^-17) of numpy's Pearson correlation.
    encoded = np.stack([PREDICTION_FIELD.encode(records[d][0]) for d in result.participants])
    assert list(result.aggregate.total) == list(plan.plain_totals(encoded))
    for dataset, score in zip(result.participants, result.values, strict=True):
        assert score == pytest.approx(np.corrcoef(raw[dataset], outcomes)[0, 1], abs=2**-14)
    scores = dict(zip(result.participants, result.values, strict=True))
    assert scores["skilled"] > scores["random"] > scores["adversarial"]
    # Every member reconstructed the same scores.
    assert all(
        list(o.aggregate.total) == list(result.aggregate.total) for o in outcomes_by_node.values()
    )


def test_a_committee_without_outcomes_collects_but_does_not_close():
    p = parse_proposal(proposal(targets=4))
    pending = p.round_config("7")
    assert pending.scoring.pending
    node = HeavyNodeRound(pending, 1, np.random.default_rng(2))
    for submission in LightNodeRound(pending, "a").submit(
        standardize([1, 2, 3, 5]), np.random.default_rng(3)
    ):
        if submission.recipient == 1:
            node.handle(submission)
    with pytest.raises(UnexpectedEventError, match="pending"):
        node.handle(CloseSubmissions("7"))
    assert node.phase == "collecting"
    node.resolve(p.round_config("7", outcomes=[1.0, 0.0, 2.0, 3.0]))
    assert node.handle(CloseSubmissions("7"))  # its agreement to the peers


def spec(**change: object) -> ForecastSpec:
    terms = {"targets": 10, "resolution_time": 1, "payout_factor": 2.0, "cap_bps": 2_000}
    terms.update(change)
    return ForecastSpec.model_validate(terms)


def test_payouts_clip_and_slash_within_the_signed_cap():
    stakes = {"a": 100 * TOKEN, "b": 100 * TOKEN, "c": 100 * TOKEN, "d": 100 * TOKEN}
    scores = {"a": Fraction(1, 20), "b": Fraction(1, 2), "c": Fraction(-1, 40), "d": Fraction(-1)}
    caps = {"a": 2_000, "b": 2_000, "c": 2_000, "d": 500}
    settled = settle_scores(spec(), scores, 1_000 * TOKEN, stakes, caps, 2_000)
    # a: 2 x 0.05 = 10% of its stake; b: 2 x 0.5 = 100%, clipped to the 20% cap.
    assert settled.payouts == {"a": 10 * TOKEN, "b": 20 * TOKEN}
    # c: 2 x -0.025 = -5%; d: -200% clipped to -20%, then to its own signed 5%.
    assert settled.slashes == {"c": 5 * TOKEN, "d": 5 * TOKEN}
    assert settled.slashed_to_payouts == 0


def test_payouts_above_the_pool_are_scaled_down_pro_rata_in_integers():
    stakes = {"a": 3_000, "b": 1_000, "c": 7}
    scores = {"a": Fraction(1), "b": Fraction(1), "c": Fraction(1)}
    settled = settle_scores(spec(cap_bps=10_000), scores, 1_001, stakes, {}, 2_000)
    # Wanted 4,007 (each whole stake, clipped at 100%); 1,001 shared pro rata and floored.
    assert settled.payouts == {"a": 3_000 * 1_001 // 4_007, "b": 1_000 * 1_001 // 4_007, "c": 1}
    assert sum(settled.payouts.values()) <= 1_001
    assert settled.summary["scaled_to_pool"] is True


def test_a_zero_score_neither_earns_nor_loses():
    settled = settle_scores(spec(), {"a": Fraction(0)}, 100, {"a": 50}, {"a": 2_000}, 2_000)
    assert (settled.payouts, settled.slashes) == ({}, {})
