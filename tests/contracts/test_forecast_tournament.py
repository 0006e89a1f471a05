"""A forecast tournament end to end on the embedded chain: skilled, random and adversarial
holders scored under sharing, paid by score, the adversary slashed within its cap and burned,
tokens conserved (the sandbox's accounting check runs inside the demo); and outcomes refused
before the resolution time or from anyone but the buyer."""

from __future__ import annotations

import pytest

from compute.proposal import parse_proposal
from market.demos.forecast import (
    CAP_BPS,
    STAKE,
    OutcomesRefused,
    _proposal,
    check_outcomes,
    run_forecast_demo,
)

BUYER = "0x" + "ab" * 20


def test_a_tournament_pays_by_score_and_slashes_the_adversary(embedded_chain):
    report = run_forecast_demo(embedded_chain, seed=3, targets=120)
    by_name = {h.name: h for h in report.holders}
    assert [h.name for h in report.holders] == ["skilled", "random", "adversarial"]
    for h in report.holders:  # the secure score is the holder's Pearson correlation
        assert h.score == pytest.approx(h.correlation, abs=2**-14)
    assert by_name["skilled"].payout > by_name["random"].payout >= 0
    assert by_name["adversarial"].payout == 0
    assert 0 < by_name["adversarial"].slash <= STAKE * CAP_BPS // 10_000
    assert report.burned == by_name["adversarial"].slash
    assert "resolution time" in report.refused_early


def test_outcomes_are_refused_before_the_resolution_time_and_from_others():
    proposal = parse_proposal(_proposal(1_000, 1_500, 10))
    with pytest.raises(OutcomesRefused, match="resolution time"):
        check_outcomes(proposal, 999, BUYER, BUYER)  # before the deadline
    with pytest.raises(OutcomesRefused, match="resolution time"):
        check_outcomes(proposal, 1_499, BUYER, BUYER)  # after it, before the resolution time
    with pytest.raises(OutcomesRefused, match="only the buyer"):
        check_outcomes(proposal, 1_500, "0x" + "cd" * 20, BUYER)
    check_outcomes(proposal, 1_500, BUYER, BUYER)
