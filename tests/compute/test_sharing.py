"""Additive and Shamir sharing: round trips, linearity, secrecy, cheating and dropouts."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from compute import field
from compute.errors import MissingSharesError, ShareInconsistencyError, SharingError
from compute.randomness import AesCtrRandom, os_random_bytes, os_rng, random_words
from compute.sharing import AdditiveScheme, Scheme, ShamirScheme, scheme_named
from tests.compute.independence import Sharer, worst_statistic
from tests.compute.strategies import schemes, secrets_for, seeds, shamir_schemes, shapes


def all_shares(shares: NDArray[np.uint64]) -> dict[int, NDArray[np.uint64]]:
    return {i + 1: shares[i] for i in range(shares.shape[0])}


@given(st.data(), schemes, shapes, seeds)
def test_reconstruct_of_share_is_the_secret_for_every_scheme_and_shape(
    data: st.DataObject, scheme: Scheme, shape: tuple[int, ...], seed: int
) -> None:
    secret = data.draw(secrets_for(scheme, shape))
    shares = scheme.share(secret, np.random.default_rng(seed))
    assert shares.shape == (scheme.n, *shape)
    assert shares.dtype == np.uint64
    assert np.array_equal(scheme.reconstruct(all_shares(shares)), secret)


@given(st.data(), schemes, shapes, seeds)
def test_any_threshold_subset_reconstructs(
    data: st.DataObject, scheme: Scheme, shape: tuple[int, ...], seed: int
) -> None:
    secret = data.draw(secrets_for(scheme, shape))
    shares = scheme.share(secret, np.random.default_rng(seed))
    holders = data.draw(
        st.lists(
            st.integers(1, scheme.n),
            min_size=scheme.threshold,
            max_size=scheme.threshold,
            unique=True,
        )
    )
    assert np.array_equal(scheme.reconstruct({h: shares[h - 1] for h in holders}), secret)


@given(st.data(), schemes, seeds, st.integers(min_value=1, max_value=20))
def test_the_sum_of_shared_vectors_reconstructs_the_sum(
    data: st.DataObject, scheme: Scheme, seed: int, providers: int
) -> None:
    rng = np.random.default_rng(seed)
    bound = scheme.capacity // (3 * providers)  # weights below go up to 3
    secrets = data.draw(
        st.lists(
            st.lists(st.integers(-bound, bound), min_size=4, max_size=4),
            min_size=providers,
            max_size=providers,
        )
    )
    stacked = np.stack([scheme.share(np.array(s, dtype=np.int64), rng) for s in secrets], axis=1)
    partials = {h + 1: scheme.sum(stacked[h]) for h in range(scheme.n)}
    assert scheme.reconstruct(partials).tolist() == [sum(c) for c in zip(*secrets, strict=True)]
    weights = data.draw(st.lists(st.integers(-3, 3), min_size=providers, max_size=providers))
    weighted = {h + 1: scheme.weighted_sum(stacked[h], weights) for h in range(scheme.n)}
    expected = [
        sum(w * v for w, v in zip(weights, c, strict=True)) for c in zip(*secrets, strict=True)
    ]
    assert scheme.reconstruct(weighted).tolist() == expected


def test_additive_sums_wrap_like_int64() -> None:
    scheme = AdditiveScheme(3)
    rng = np.random.default_rng(0)
    big = np.array([2**62, -(2**62)], dtype=np.int64)
    shares = [scheme.share(big, rng) for _ in range(2)]
    total = {h + 1: shares[0][h] + shares[1][h] for h in range(3)}
    assert scheme.reconstruct(total).tolist() == [-(2**63), -(2**63)]  # as int64 does


# --- secrecy ----------------------------------------------------------------------------------

SECRET_PAIRS = [(0, 1), (0, 2**40 + 12345), (-(2**59), 2**59)]


def _proper_subsets(scheme: Scheme) -> list[tuple[int, ...]]:
    size = scheme.threshold - 1
    return [s for k in range(1, size + 1) for s in combinations(range(1, scheme.n + 1), k)]


@pytest.mark.parametrize("scheme", [AdditiveScheme(2), AdditiveScheme(3), AdditiveScheme(4)])
@pytest.mark.parametrize("secrets", SECRET_PAIRS)
def test_any_proper_subset_of_additive_shares_is_independent_of_the_secret(
    scheme: Scheme, secrets: tuple[int, int]
) -> None:
    for holders in _proper_subsets(scheme):
        assert worst_statistic(scheme.share, holders, secrets, 64) < 1, holders


@pytest.mark.parametrize("scheme", [ShamirScheme(3, 2), ShamirScheme(5, 3), ShamirScheme(4, 4)])
@pytest.mark.parametrize("secrets", SECRET_PAIRS)
def test_fewer_than_t_shamir_shares_are_independent_of_the_secret(
    scheme: Scheme, secrets: tuple[int, int]
) -> None:
    for holders in _proper_subsets(scheme):
        assert worst_statistic(scheme.share, holders, secrets, 61) < 1, holders


def _short_masks(secret: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.uint64]:
    """A broken additive sharer: masks of 32 bits instead of 64."""
    masks = rng.integers(0, 2**32, size=(2, *secret.shape), dtype=np.uint64)
    return np.stack([masks[0], masks[1], secret.view(np.uint64) - masks[0] - masks[1]])


def _short_coefficient(secret: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.uint64]:
    """A broken Shamir sharer: a coefficient of 40 bits instead of a field element."""
    a = rng.integers(0, 2**40, size=secret.shape, dtype=np.uint64)
    x = field.from_signed(secret)
    return np.stack([field.add(x, field.mul_small(a, i)) for i in (1, 2, 3)])


def _secret_in_the_clear(secret: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.uint64]:
    """A broken sharer that hands one holder the secret itself."""
    shares = AdditiveScheme(3).share(secret, rng)
    shares[0] = secret.view(np.uint64)
    return shares


@pytest.mark.parametrize(
    ("sharer", "holders", "bits"),
    [
        (_short_masks, (1,), 64),
        (_short_masks, (3,), 64),
        (_short_coefficient, (2,), 61),
        (_secret_in_the_clear, (1,), 64),
    ],
)
def test_the_independence_check_catches_broken_sharers(
    sharer: Sharer, holders: tuple[int, ...], bits: int
) -> None:
    assert worst_statistic(sharer, holders, (0, 2**63 - 1 if bits == 64 else 2**59), bits) > 10


# --- cheating, dropouts -----------------------------------------------------------------------


@settings(max_examples=60)
@given(st.data(), shamir_schemes(min_redundancy=2), seeds)
def test_a_tampered_share_is_detected_and_its_holder_named(
    data: st.DataObject, scheme: ShamirScheme, seed: int
) -> None:
    secret = data.draw(secrets_for(scheme, (6,)))
    shares = scheme.share(secret, np.random.default_rng(seed))
    holder = data.draw(st.integers(1, scheme.n), label="cheater")
    position = data.draw(st.integers(0, 5))
    delta = data.draw(st.integers(1, field.P - 1))
    shares[holder - 1, position] = (int(shares[holder - 1, position]) + delta) % field.P
    with pytest.raises(ShareInconsistencyError) as info:
        scheme.reconstruct(all_shares(shares))
    assert info.value.holder == holder
    assert info.value.holders == (holder,)


@settings(max_examples=30)
@given(st.data(), shamir_schemes(min_redundancy=4), seeds)
def test_two_tampered_shares_are_both_named_with_enough_redundancy(
    data: st.DataObject, scheme: ShamirScheme, seed: int
) -> None:
    shares = scheme.share(np.arange(5, dtype=np.int64), np.random.default_rng(seed))
    cheaters = data.draw(st.lists(st.integers(1, scheme.n), min_size=2, max_size=2, unique=True))
    for holder in cheaters:
        shares[holder - 1, holder % 5] = field.add(shares[holder - 1, holder % 5], np.uint64(1))
    with pytest.raises(ShareInconsistencyError) as info:
        scheme.reconstruct(all_shares(shares))
    assert info.value.holders == tuple(sorted(cheaters))


@given(st.data(), shamir_schemes(min_redundancy=1), seeds)
def test_one_extra_share_detects_but_cannot_name(
    data: st.DataObject, scheme: ShamirScheme, seed: int
) -> None:
    shares = scheme.share(np.zeros(3, dtype=np.int64), np.random.default_rng(seed))
    holders = tuple(range(1, scheme.t + 2))
    holder = data.draw(st.sampled_from(holders))
    shares[holder - 1, 1] = field.add(shares[holder - 1, 1], np.uint64(7))
    with pytest.raises(ShareInconsistencyError, match="too few to tell") as info:
        scheme.reconstruct({h: shares[h - 1] for h in holders})
    assert info.value.holder is None
    assert info.value.suspects == holders
    assert scheme.inconsistent({h: shares[h - 1] for h in holders}).tolist() == [0, 1, 0]


def test_missing_shares() -> None:
    rng = np.random.default_rng(0)
    additive = AdditiveScheme(3)
    shares = additive.share(np.array([1, 2]), rng)
    with pytest.raises(MissingSharesError, match="missing holders \\[2\\]"):
        additive.reconstruct({1: shares[0], 3: shares[2]})
    shamir = ShamirScheme(5, 3)
    shares = shamir.share(np.array([1, 2]), rng)
    with pytest.raises(MissingSharesError):
        shamir.reconstruct({4: shares[3], 5: shares[4]})
    assert shamir.reconstruct({2: shares[1], 4: shares[3], 5: shares[4]}).tolist() == [1, 2]


def test_bad_parameters_and_inputs() -> None:
    with pytest.raises(SharingError):
        ShamirScheme(3, 4)
    with pytest.raises(SharingError):
        AdditiveScheme(1)
    with pytest.raises(SharingError, match="unknown sharing scheme"):
        scheme_named("xor")
    with pytest.raises(SharingError):
        scheme_named("additive", 3, 2)
    assert scheme_named("shamir", 5, 3) == ShamirScheme(5, 3)
    shares = AdditiveScheme(3).share(np.array([1]), np.random.default_rng(0))
    with pytest.raises(SharingError, match="1..3"):
        AdditiveScheme(3).reconstruct({0: shares[0], 1: shares[1], 2: shares[2]})
    with pytest.raises(SharingError, match="one shape"):
        AdditiveScheme(3).reconstruct({1: shares[0], 2: shares[1], 3: np.zeros(2, np.uint64)})


# --- randomness sources -------------------------------------------------------------------------


def test_every_randomness_source_shares_correctly() -> None:
    secret = np.arange(-50, 50, dtype=np.int64)
    for rng in (np.random.default_rng(1), os_rng(), os_random_bytes, AesCtrRandom.from_seed(3)):
        for scheme in (AdditiveScheme(3), ShamirScheme(3, 2)):
            assert np.array_equal(scheme.reconstruct(all_shares(scheme.share(secret, rng))), secret)


def test_aes_ctr_stream_is_reproducible_and_never_repeats() -> None:
    a, b = AesCtrRandom.from_seed(7), AesCtrRandom.from_seed(7)
    first = random_words(a, (3, 5))
    assert np.array_equal(first, random_words(b, (3, 5)))
    assert not np.array_equal(first, random_words(a, (3, 5)))
    assert not np.array_equal(random_words(AesCtrRandom.from_seed(8), 4), random_words(b, 4))
    assert len(a(13)) == 13 and len(a(0)) == 0
    odd = np.empty(3, dtype=np.uint64)
    a.fill(odd)
    big = random_words(a, 2**17 + 1)  # more than one counter buffer: no repeated words
    assert np.unique(big).size == big.size
    with pytest.raises(ValueError, match="16-byte"):
        AesCtrRandom(b"short")
