"""Seed compression: a holder whose share is pure randomness gets a seed; its expansion, the
vectors sent with it, and the heavy node's running sum of both."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from compute import field
from compute import sharing as sharing_module
from compute.errors import ShareInconsistencyError, SharingError
from compute.randomness import AesCtrRandom, random_words
from compute.reduce import PartialSum
from compute.sharing import (
    SEED_BYTES,
    AdditiveScheme,
    Scheme,
    ShamirScheme,
    expand_seed,
    seed_elements,
)
from tests.compute.independence import worst_statistic
from tests.compute.strategies import schemes, secrets_for, seeds, shamir_schemes, shapes

SEED = bytes(range(SEED_BYTES))


def _seeded_sets(scheme: Scheme) -> list[tuple[int, ...]]:
    """Every set of holders the scheme may seed (n - 1 for additive, t - 1 for Shamir)."""
    count = scheme.n - 1 if isinstance(scheme, AdditiveScheme) else scheme.threshold - 1
    return list(combinations(range(1, scheme.n + 1), count))


# --- the expansion ------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 3, 1000, 1001, 2 * 65536, 2 * 65536 + 1, 300_001])
def test_a_seed_expands_to_the_aes_ctr_stream_keyed_with_it(count: int) -> None:
    expected = random_words(AesCtrRandom(SEED), count)
    assert np.array_equal(expand_seed(SEED, count), expected)
    out = np.empty(count, dtype=np.uint64)
    assert expand_seed(SEED, count, out) is out and np.array_equal(out, expected)
    assert np.array_equal(expand_seed(SEED, count), expected)  # deterministic


def test_seed_elements_are_the_stream_as_field_elements() -> None:
    elements = seed_elements(SEED, 5000)
    assert np.array_equal(elements, field.random_elements(AesCtrRandom(SEED), 5000))
    assert int(elements.max()) < field.P
    assert np.array_equal(seed_elements(SEED, 5000), elements)
    other = bytes(SEED_BYTES)
    assert not np.array_equal(seed_elements(other, 5000), elements)


def test_seeds_of_another_length_or_out_of_another_size_are_refused() -> None:
    with pytest.raises(SharingError, match="16 bytes"):
        expand_seed(b"short", 4)
    with pytest.raises(SharingError, match="C-contiguous"):
        expand_seed(SEED, 4, np.empty(5, dtype=np.uint64))


@pytest.mark.parametrize("scheme", [AdditiveScheme(3), ShamirScheme(3, 2), ShamirScheme(5, 3)])
def test_sharing_is_the_same_whatever_the_step_size(
    scheme: Scheme, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider expands its seeds step by step over the columns; any steps give the
    same shares as the seeds' whole expansions (`seed_share`)."""
    secret = np.random.default_rng(1).integers(-(2**50), 2**50, size=1001)
    by_step = {}
    for columns in (2, 6, 1 << 13):
        monkeypatch.setattr(sharing_module, "_COLUMNS", columns)
        shares = scheme.share_seeded(secret, np.random.default_rng(7), scheme.seed_holders(2))
        by_step[columns] = scheme.expand(shares)
        for holder, seed in shares.seeds.items():
            assert np.array_equal(by_step[columns][holder - 1], scheme.seed_share(seed, (1001,)))
    assert all(np.array_equal(by_step[2], other) for other in by_step.values())


# --- sharing with seeds -------------------------------------------------------------------------


@given(st.data(), schemes, shapes, seeds)
def test_seeded_shares_reconstruct_the_secret_for_every_scheme_shape_and_seeded_set(
    data: st.DataObject, scheme: Scheme, shape: tuple[int, ...], seed: int
) -> None:
    secret = data.draw(secrets_for(scheme, shape))
    seeded = data.draw(st.sampled_from(_seeded_sets(scheme)))
    shares = scheme.share_seeded(secret, np.random.default_rng(seed), seeded)
    assert sorted(shares.seeds) == list(seeded)
    assert sorted([*shares.seeds, *shares.vectors]) == list(range(1, scheme.n + 1))
    assert all(len(s) == SEED_BYTES for s in shares.seeds.values())
    assert all(v.shape == shape and v.dtype == np.uint64 for v in shares.vectors.values())
    stacked = scheme.expand(shares)
    assert stacked.shape == (scheme.n, *shape)
    assert np.array_equal(
        scheme.reconstruct({h: stacked[h - 1] for h in range(1, scheme.n + 1)}), secret
    )
    for holders in combinations(range(1, scheme.n + 1), scheme.threshold):
        assert np.array_equal(scheme.reconstruct({h: stacked[h - 1] for h in holders}), secret)


@given(schemes, st.integers(0, 50))
def test_a_provider_uploads_one_vector_per_holder_it_cannot_seed(scheme: Scheme, size: int) -> None:
    shares = scheme.share_seeded(np.zeros(size, dtype=np.int64), np.random.default_rng(0))
    vectors = 1 if isinstance(scheme, AdditiveScheme) else scheme.n - scheme.threshold + 1
    assert len(shares.vectors) == vectors
    assert shares.upload_bytes == vectors * 8 * size + (scheme.n - vectors) * SEED_BYTES


def test_the_default_seeded_holders_and_the_rotation() -> None:
    additive, shamir = AdditiveScheme(3), ShamirScheme(3, 2)
    assert sorted(additive.share_seeded([1], np.random.default_rng(0)).seeds) == [1, 2]
    assert sorted(shamir.share_seeded([1], np.random.default_rng(0)).seeds) == [1]
    assert [additive.seed_holders(k) for k in range(4)] == [(2, 3), (1, 3), (1, 2), (2, 3)]
    assert [shamir.seed_holders(k) for k in range(4)] == [(1,), (2,), (3,), (1,)]
    assert [ShamirScheme(5, 3).seed_holders(k) for k in (0, 4)] == [(1, 2), (1, 5)]
    assert ShamirScheme(3, 1).seed_holders(0) == ()
    for scheme in (additive, shamir, ShamirScheme(5, 3), AdditiveScheme(4)):
        seeds_per_holder = [
            sum(h in scheme.seed_holders(k) for k in range(scheme.n))
            for h in range(1, scheme.n + 1)
        ]
        assert len(set(seeds_per_holder)) == 1  # over n providers, every holder alike


def test_a_seeded_set_of_the_wrong_size_or_holders_is_refused() -> None:
    rng = np.random.default_rng(0)
    for scheme, seeded in [
        (AdditiveScheme(3), (1,)),
        (AdditiveScheme(3), (1, 2, 3)),
        (AdditiveScheme(3), (0, 1)),
        (ShamirScheme(3, 2), (1, 2)),
        (ShamirScheme(3, 2), (4,)),
        (ShamirScheme(5, 3), (2, 2)),
    ]:
        with pytest.raises(SharingError, match="seeds exactly"):
            scheme.share_seeded([1, 2], rng, seeded)
    shares = AdditiveScheme(3).share_seeded([1, 2], rng)
    with pytest.raises(SharingError, match="once each"):
        AdditiveScheme(4).expand(shares)


def test_a_seed_whose_expansion_holds_p_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """p (all 61 bits set) has probability 2^-61 per element: forced here by a cipher whose
    first key gives all-ones words, which the provider must not send."""
    real = sharing_module._seed_cipher
    first: list[bytes] = []

    class AllOnes:
        def encrypt(self, data: bytes, output: memoryview | None = None) -> bytes | None:
            ones = b"\xff" * len(data)
            if output is None:
                return ones
            output[:] = ones
            return None

    def cipher(seed: bytes) -> object:
        if not first or first[0] == seed:
            first.append(seed)
            return AllOnes()
        return real(seed)

    monkeypatch.setattr(sharing_module, "_seed_cipher", cipher)
    secret = np.arange(-5, 5, dtype=np.int64)
    for scheme in (ShamirScheme(3, 2), ShamirScheme(4, 3)):
        first.clear()
        shares = scheme.share_seeded(secret, np.random.default_rng(3), scheme.seed_holders(1))
        assert first[0] not in shares.seeds.values()  # the bad seed was drawn, and replaced
        stacked = scheme.expand(shares)
        assert int(stacked.max()) < field.P
        assert np.array_equal(scheme.reconstruct({h: stacked[h - 1] for h in (1, 2, 3)}), secret)


# --- secrecy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme", [AdditiveScheme(2), AdditiveScheme(3), ShamirScheme(3, 2), ShamirScheme(5, 3)]
)
def test_fewer_than_threshold_seeded_shares_are_independent_of_the_secret(scheme: Scheme) -> None:
    """The same statistical check as for `share`, over every set of holders below the
    threshold, for every choice of seeded holders (so vectors, seeds and mixes of both)."""
    bits = 64 if isinstance(scheme, AdditiveScheme) else 61
    secrets = (0, 2**59) if bits == 61 else (0, 2**63 - 1)
    below = [s for k in range(1, scheme.threshold) for s in combinations(range(1, scheme.n + 1), k)]
    for seeded in _seeded_sets(scheme):

        def sharer(
            secret: NDArray[np.int64], rng: np.random.Generator, seeded: tuple[int, ...] = seeded
        ) -> NDArray[np.uint64]:
            return scheme.expand(scheme.share_seeded(secret, rng, seeded))

        for holders in below:
            assert worst_statistic(sharer, holders, secrets, bits) < 1, (seeded, holders)


# --- cheating -----------------------------------------------------------------------------------


@settings(max_examples=40)
@given(st.data(), shamir_schemes(min_redundancy=1), seeds)
def test_a_tampered_seeded_share_is_detected(
    data: st.DataObject, scheme: ShamirScheme, seed: int
) -> None:
    """Seeded Shamir shares lie on one polynomial: a vector changed in one place, or a seed
    swapped for another, breaks the consistency check."""
    secret = data.draw(secrets_for(scheme, (6,)))
    seeded = data.draw(st.sampled_from(_seeded_sets(scheme)))
    shares = scheme.share_seeded(secret, np.random.default_rng(seed), seeded)
    stacked = scheme.expand(shares)
    everyone = {h: stacked[h - 1] for h in range(1, scheme.n + 1)}
    assert not scheme.inconsistent(everyone).any()
    holder = data.draw(st.sampled_from(sorted(shares.vectors)), label="cheater")
    position = data.draw(st.integers(0, 5))
    tampered = dict(everyone)
    tampered[holder] = everyone[holder].copy()
    tampered[holder][position] = (int(tampered[holder][position]) + 1) % field.P
    assert scheme.inconsistent(tampered).tolist() == [i == position for i in range(6)]
    with pytest.raises(ShareInconsistencyError):
        scheme.reconstruct(tampered)
    if shares.seeds:
        swapped = next(iter(shares.seeds))
        wrong = dict(everyone)
        wrong[swapped] = scheme.seed_share(bytes(SEED_BYTES), (6,))
        assert scheme.inconsistent(wrong).all()
        with pytest.raises(ShareInconsistencyError):
            scheme.reconstruct(wrong)


# --- the heavy node's running sum ---------------------------------------------------------------


@settings(max_examples=30)
@given(
    st.sampled_from([AdditiveScheme(3), ShamirScheme(3, 2), ShamirScheme(5, 3)]),
    st.integers(1, 40),
    st.sampled_from([1, 7, 3000]),
    seeds,
)
def test_partials_of_seeds_and_vectors_reconstruct_the_sum(
    scheme: Scheme, providers: int, length: int, seed: int
) -> None:
    """Every holder expands the seeds it received and adds them and its vectors into one
    `PartialSum`, in whatever order they arrive; the partials reconstruct the plaintext sum."""
    rng = np.random.default_rng(seed)
    bound = scheme.capacity // providers
    data = rng.integers(-bound, bound, size=(providers, length), endpoint=True)
    running = {h: PartialSum(scheme, length) for h in range(1, scheme.n + 1)}
    for provider, row in enumerate(data):
        shares = scheme.share_seeded(row, rng, scheme.seed_holders(provider))
        for holder, share_seed in shares.seeds.items():
            running[holder].add_seeds([share_seed])
        for holder, vector in shares.vectors.items():
            running[holder].add(vector)
    partials = {h: r.value for h, r in running.items()}
    assert np.array_equal(scheme.reconstruct(partials), data.sum(axis=0))


@pytest.mark.parametrize("width", [3, 100, 5000])
@pytest.mark.parametrize("rows", [1, 7, 8, 50, 400])
def test_the_shamir_running_sum_folds_before_it_can_overflow(width: int, rows: int) -> None:
    """The largest words a running sum may meet (p itself, which a seed's expansion can give)
    on every path (a few rows, a tree of short rows, row by row), plus seeds: no overflow."""
    scheme = ShamirScheme(3, 2)
    stack = np.full((rows, width), field.P, dtype=np.uint64)
    stack[0] = field.P - 1
    running = PartialSum(scheme, width)
    for _ in range(3):
        running.add(stack)
    running.add_seeds([SEED] * 9)
    expected = (3 * ((rows - 1) * field.P + field.P - 1)) % field.P
    seeded = [int(x) for x in seed_elements(SEED, width)]
    assert running.value.tolist() == [(expected + 9 * s) % field.P for s in seeded]


@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=30))
def test_fold_keeps_the_residue_and_leaves_room_for_seven_more(values: list[int]) -> None:
    array = np.array(values, dtype=np.uint64)
    folded = field.fold(array.copy())
    assert [int(v) % field.P for v in folded] == [v % field.P for v in values]
    assert int(folded.max()) <= field.P + 7
    assert (field.P + 7) + 7 * field.P < 2**64  # the bound PartialSum relies on


@given(
    st.lists(st.integers(0, field.P - 1), min_size=1, max_size=20),
    st.integers(-(2**70), 2**70),
)
def test_mul_by_a_constant_matches_python_in_place_or_not(values: list[int], c: int) -> None:
    array = np.array(values, dtype=np.uint64)
    expected = [v * c % field.P for v in values]
    assert field.mul(array, c).tolist() == expected
    assert field.mul(c, array).tolist() == expected
    assert field.mul(array[:, np.newaxis], array).shape == (len(values), len(values))
    assert int(field.mul(np.uint64(values[0]), c % field.P)) == expected[0]
