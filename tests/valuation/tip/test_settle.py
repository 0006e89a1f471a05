"""From scores to money: exact payouts for positive influence, slashes within the signed caps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.valuation.errors import InconsistentInputError, InvalidWeightError
from market.valuation.payouts import slash_cap
from market.valuation.tip.settle import settle_valuation, severity_from_scores
from tests.valuation.strategies import addresses
from tests.valuation.tip.conftest import trained_buyer

dataset_ids = st.binary(min_size=32, max_size=32).map(lambda raw: "0x" + raw.hex())
scores_st = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)

OWNER_A, OWNER_B = "0x" + "aa" * 20, "0x" + "bb" * 20
DS = {name: "0x" + f"{i:02x}" * 32 for i, name in enumerate(["a", "b", "c", "d"], start=1)}


def _settle(scores: dict[str, float], owners: dict[str, str], **kw: object):  # type: ignore[no-untyped-def]
    args = dict(
        budget=1_000_000,
        fee_bps=250,
        n_accepted=3,
        stakes=dict.fromkeys(scores, 10_000),
        caps_bps=dict.fromkeys(scores, 5_000),
        job_max_slash_bps=2_000,
    )
    args.update(kw)
    return settle_valuation(scores, owners, **args)  # type: ignore[arg-type]


def test_positive_scores_are_paid_and_harm_is_slashed() -> None:
    scores = {DS["a"]: 3.0, DS["b"]: 1.0, DS["c"]: -2.0, DS["d"]: 0.0}
    owners = {DS["a"]: OWNER_A, DS["b"]: OWNER_B, DS["c"]: OWNER_B, DS["d"]: OWNER_A}
    result = _settle(scores, owners)
    s = result.settlement
    assert s.fee == 25_000 and s.payout_total == 975_000
    assert result.severity_bps == {DS["c"]: 6_666}  # 2/3 of the best help
    assert result.slashes == {DS["c"]: 2_000}  # job max 20% < cap 50% < severity 66.66%
    assert s.slashed_to_payouts == 2_000 and s.burned == 0
    # The pool by influence (3:1); the slash of c goes to a alone: c's owner also owns b, and
    # an owner never recovers its own slash through another dataset.
    assert result.payouts_by_dataset == {DS["a"]: 731_250 + 2_000, DS["b"]: 243_750}
    assert result.payouts == {OWNER_A: 733_250, OWNER_B: 243_750}
    assert sum(result.payouts.values()) == s.claimable == 977_000
    assert sum(s.fee_per_member) + s.payout_total + s.refund == 1_000_000


def test_one_owner_of_several_datasets_is_paid_their_sum() -> None:
    scores = {DS["a"]: 1.0, DS["b"]: 1.0, DS["c"]: 1.0}
    result = _settle(scores, dict.fromkeys(scores, OWNER_A), budget=1_001, fee_bps=0)
    assert result.payouts == {OWNER_A: 1_001}


def test_without_positive_scores_the_pool_is_refunded_and_slashes_burned() -> None:
    scores = {DS["a"]: -1.0, DS["b"]: -4.0}
    result = _settle(scores, {})
    s = result.settlement
    assert result.payouts == {} and s.payout_total == 0
    assert s.refund == 1_000_000 - sum(s.fee_per_member)
    assert result.severity_bps == {DS["a"]: 2_500, DS["b"]: 10_000}
    assert result.slashes == {DS["a"]: 2_000, DS["b"]: 2_000}
    assert s.burned == 4_000 and s.claimable == 0


def test_slashes_can_be_burned_instead_and_the_buyer_never_gets_them() -> None:
    scores = {DS["a"]: 1.0, DS["b"]: -1.0}
    owners = {DS["a"]: OWNER_A}
    kept = _settle(scores, owners, slashed_to_payouts=False)
    shared = _settle(scores, owners)
    assert kept.settlement.burned == kept.settlement.slashed_total == 2_000
    assert shared.settlement.burned == 0
    assert kept.settlement.refund == shared.settlement.refund  # slashes never reach the buyer
    assert shared.payouts[OWNER_A] == kept.payouts[OWNER_A] + 2_000


def test_harm_threshold_and_full_slash_scale() -> None:
    scores = {DS["a"]: 10.0, DS["b"]: -1.0, DS["c"]: -20.0}
    assert severity_from_scores(scores, harm_threshold=1.5) == {DS["c"]: 10_000}
    assert severity_from_scores(scores, full_slash_at=4.0) == {DS["b"]: 250, DS["c"]: 5_000}


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(InvalidWeightError):
        _settle({DS["a"]: float("nan")}, {})
    with pytest.raises(InconsistentInputError):
        _settle({DS["a"]: 1.0}, {})  # paid but no owner
    with pytest.raises(InconsistentInputError):
        _settle({DS["a"]: 1.0, DS["b"]: -1.0}, {DS["a"]: OWNER_A}, stakes={})


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        dataset_ids,
        st.tuples(scores_st, addresses, st.integers(0, 2**96), st.integers(0, 2**16 - 1)),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 10**24),
    st.integers(0, 5_000),
    st.integers(0, 10_000),
    st.booleans(),
)
def test_payouts_sum_exactly_and_slashes_stay_within_caps(
    providers: dict[str, tuple[float, str, int, int]],
    budget: int,
    fee_bps: int,
    job_max: int,
    to_payouts: bool,
) -> None:
    scores = {key: s for key, (s, _, _, _) in providers.items()}
    owners = {key: o for key, (_, o, _, _) in providers.items()}
    stakes = {key: st_ for key, (_, _, st_, _) in providers.items()}
    caps = {key: c for key, (_, _, _, c) in providers.items()}
    result = settle_valuation(
        scores,
        owners,
        budget=budget,
        fee_bps=fee_bps,
        n_accepted=2,
        stakes=stakes,
        caps_bps=caps,
        job_max_slash_bps=job_max,
        slashed_to_payouts=to_payouts,
    )
    s = result.settlement
    assert sum(result.payouts.values()) == s.claimable == s.payout_total + s.slashed_to_payouts
    assert sum(s.fee_per_member) + s.payout_total + s.refund == budget
    assert s.claimable + s.burned == s.payout_total + s.slashed_total
    assert sum(result.slashes.values()) == s.slashed_total
    for key, amount in result.slashes.items():
        assert scores[key] < 0
        assert amount <= slash_cap(stakes[key], caps[key], job_max)
    for key, amount in result.payouts_by_dataset.items():
        assert scores[key] > 0 and amount >= 0
    # A slashed owner is paid from the budget's pool only, never from slashed tokens.
    without = settle_valuation(
        scores, owners, budget=budget, fee_bps=fee_bps, n_accepted=2, stakes=stakes,
        caps_bps=caps, job_max_slash_bps=job_max, slashed_to_payouts=False,
    )  # fmt: skip
    for key in result.slashes:
        owner = owners[key]
        assert result.payouts.get(owner, 0) == without.payouts.get(owner, 0)


def test_influence_to_money_on_digits() -> None:
    """End to end on real scores: payouts ordered by influence, the flipped provider slashed
    within its cap, tokens conserved."""
    buyer = trained_buyer("digits", "mlp")
    ids = {p.name: "0x" + f"{i + 1:02x}" * 32 for i, p in enumerate(buyer.market.providers)}
    scores = {
        ids[p.name]: float((buyer.gradients(p.name) @ buyer.query.q).sum())
        for p in buyer.market.providers
    }
    owners = {ids[name]: "0x" + f"{i + 1:02x}" * 20 for i, name in enumerate(ids)}
    stakes = dict.fromkeys(scores, 10**18)
    caps = dict.fromkeys(scores, 1_000)
    result = settle_valuation(
        scores,
        owners,
        budget=10**21,
        fee_bps=100,
        n_accepted=2,
        stakes=stakes,
        caps_bps=caps,
        job_max_slash_bps=3_000,
    )
    flipped = ids["flipped"]
    assert flipped in result.slashes
    assert result.slashes[flipped] <= slash_cap(10**18, 1_000, 3_000) == 10**17
    paid = result.payouts_by_dataset
    ranked = sorted(paid, key=scores.__getitem__)
    assert [paid[key] for key in ranked] == sorted(paid.values())
    s = result.settlement
    assert s.fee + s.payout_total + s.refund == 10**21
    assert sum(result.payouts.values()) == s.payout_total + s.slashed_to_payouts
