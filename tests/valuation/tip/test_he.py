"""HE backends: encrypted scores match plaintext, the public context cannot decrypt, payloads
are checked."""

from __future__ import annotations

import numpy as np
import pytest

from market.bench.valuation import pearson, spearman
from market.valuation.tip import he
from market.valuation.tip.errors import (
    GradientRangeError,
    InvalidParamsError,
    MalformedPayloadError,
    SecretKeyMissingError,
)
from market.valuation.tip.he import (
    BuyerContext,
    CKKSParams,
    HEBackend,
    PlainBackend,
    PublicContext,
    TenSealCKKS,
    compare_packings,
)
from tests.valuation.tip.conftest import trained_buyer


def round_trip(backend: HEBackend, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    buyer = backend.create_buyer(len(q))
    public = backend.load_public(buyer.public_context())
    return buyer.decrypt_scores(public.score(buyer.encrypt_query(q), g))


def test_backends_follow_the_protocols(backend: HEBackend) -> None:
    buyer = backend.create_buyer(8)
    assert isinstance(buyer, BuyerContext)
    assert isinstance(backend.load_public(buyer.public_context()), PublicContext)


def test_encrypted_influence_matches_plaintext(backend: HEBackend) -> None:
    buyer = trained_buyer("digits", "mlp")
    plain, decrypted = [], []
    enc = backend.create_buyer(buyer.projection.k)
    public_context, query = enc.public_context(), enc.encrypt_query(buyer.query.q)
    for p in buyer.market.providers:
        g = buyer.gradients(p.name)
        plain.append(g @ buyer.query.q)
        payload = backend.load_public(public_context).score(query, g)
        decrypted.append(enc.decrypt_scores(payload))
    a, b = np.concatenate(plain), np.concatenate(decrypted)
    assert pearson(a, b) >= 0.999
    assert spearman(a, b) >= 0.999
    assert np.argmin([s.sum() for s in decrypted]) == np.argmin([s.sum() for s in plain])


@pytest.mark.parametrize(("k", "n"), [(1, 3), (3, 1), (100, 1000), (256, 5000), (1024, 700)])
def test_scores_match_numpy_for_any_shape(backend: HEBackend, k: int, n: int) -> None:
    rng = np.random.default_rng(k * 7919 + n)
    q, g = rng.standard_normal(k) * 5, rng.standard_normal((n, k))
    got = round_trip(backend, q, g)
    assert got.shape == (n,)
    np.testing.assert_allclose(got, g @ q, atol=1e-4 * np.linalg.norm(q) * np.sqrt(k))


def test_no_examples_gives_no_scores(backend: HEBackend) -> None:
    assert round_trip(backend, np.ones(4), np.zeros((0, 4))).shape == (0,)


def test_every_fold_of_the_packing_is_exact() -> None:
    backend = TenSealCKKS()
    k, n = 64, 300
    rng = np.random.default_rng(3)
    q, g = rng.standard_normal(k), rng.standard_normal((n, k))
    buyer = backend.create_buyer(k)
    public = backend.load_public(buyer.public_context())
    query_ct = public.load_query(buyer.encrypt_query(q))
    layout = he._Layout(backend.params, k)
    folds = [1 << i for i in range(layout.max_fold.bit_length())]
    assert folds[-1] == layout.max_fold == 8
    for fold in folds:
        cts = public.score_ciphertexts(query_ct, g, fold)
        header = {"kind": "scores", "backend": backend.name, "n": n, "fold": fold}
        payload = he._pack(header, [he._seal_bytes(ct) for ct in cts])
        np.testing.assert_allclose(buyer.decrypt_scores(payload), g @ q, atol=1e-4)


def test_public_context_cannot_decrypt(backend: HEBackend) -> None:
    buyer = backend.create_buyer(16)
    public = backend.load_public(buyer.public_context())
    assert public.has_secret_key is False
    payload = public.score(buyer.encrypt_query(np.ones(16)), np.ones((3, 16)))
    with pytest.raises(SecretKeyMissingError):
        public.decrypt_scores(payload)
    np.testing.assert_allclose(buyer.decrypt_scores(payload), 16.0, rtol=1e-6)


def test_tenseal_public_context_holds_no_secret_key() -> None:
    import tenseal as ts

    backend = TenSealCKKS()
    buyer = backend.create_buyer(16)
    public = backend.load_public(buyer.public_context())
    ctx = public.tenseal_context
    assert not ctx.is_private() and not ctx.has_secret_key()
    _, blobs = he._unpack(buyer.encrypt_query(np.ones(16)), "query", backend.name)
    vec = ts.ckks_vector_from(ctx, blobs[0])
    with pytest.raises(ValueError, match="secret"):
        vec.decrypt()


def test_a_context_with_a_secret_key_is_refused() -> None:
    backend = TenSealCKKS()
    buyer = backend.create_buyer(16)
    header, blobs = he._unpack(buyer.public_context(), "public-context", backend.name)
    leaky = buyer._ctx.serialize(save_secret_key=True, save_galois_keys=False)
    payload = he._pack({k: v for k, v in header.items() if k != "sizes"}, [leaky, blobs[1]])
    with pytest.raises(MalformedPayloadError, match="secret key"):
        backend.load_public(payload)


def test_payloads_are_checked(backend: HEBackend) -> None:
    buyer = backend.create_buyer(8)
    public = backend.load_public(buyer.public_context())
    query = buyer.encrypt_query(np.ones(8))
    other = PlainBackend() if backend.name != "plain" else TenSealCKKS()
    with pytest.raises(MalformedPayloadError):
        backend.load_public(other.create_buyer(8).public_context())
    with pytest.raises(MalformedPayloadError):
        public.score(query[:-5], np.ones((2, 8)))
    with pytest.raises(MalformedPayloadError):
        public.score(b"not a payload", np.ones((2, 8)))
    with pytest.raises(MalformedPayloadError):
        public.score(backend.create_buyer(4).encrypt_query(np.ones(4)), np.ones((2, 8)))
    with pytest.raises(GradientRangeError):
        public.score(query, np.ones((2, 7)))
    with pytest.raises(GradientRangeError):
        public.score(query, np.full((2, 8), np.nan))
    with pytest.raises(InvalidParamsError):
        buyer.encrypt_query(np.ones(9))


def test_gradients_beyond_the_ckks_headroom_are_refused() -> None:
    backend = TenSealCKKS()
    buyer = backend.create_buyer(4)
    public = backend.load_public(buyer.public_context())
    with pytest.raises(GradientRangeError, match="headroom"):
        public.score(buyer.encrypt_query(np.ones(4)), np.full((1, 4), 2.0**20))


def test_decrypting_needs_a_query_first() -> None:
    with pytest.raises(InvalidParamsError):
        TenSealCKKS().create_buyer(4).decrypt_scores(b"")


def test_ckks_params_round_trip_and_validation() -> None:
    params = CKKSParams()
    assert CKKSParams.from_json(params.to_json()) == params
    assert params.slots == 4096 and params.headroom_bits == 19
    with pytest.raises(InvalidParamsError, match="128-bit"):
        CKKSParams(coeff_mod_bit_sizes=(60, 60, 60, 60))  # 240 > 218 bits for N = 8192
    with pytest.raises(InvalidParamsError):
        CKKSParams(poly_modulus_degree=5000)
    with pytest.raises(InvalidParamsError):
        CKKSParams(coeff_mod_bit_sizes=(60, 60))
    with pytest.raises(InvalidParamsError):
        CKKSParams.from_json({"poly_modulus_degree": 8192})
    with pytest.raises(InvalidParamsError, match="slots"):
        TenSealCKKS(CKKSParams(4096, (40, 30, 39), 30)).create_buyer(4096)


def test_compare_packings_reports_every_packing() -> None:
    result = compare_packings(k=16, n=300, per_example_sample=4)
    assert set(result) == {"bsgs_diagonal", "tenseal_matmul", "per_example"}
    for entry in result.values():
        assert entry["seconds"] > 0 and entry["max_abs_error"] < 1e-3
    assert result["per_example"]["result_bytes"] > result["bsgs_diagonal"]["result_bytes"]
