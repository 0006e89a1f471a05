"""The buyer's secret context survives a round trip through bytes: after reloading it decrypts
what it would have decrypted before, and gives the same public context (so a job's published
context identifies its secret)."""

from __future__ import annotations

import numpy as np
import pytest

from market.valuation.tip.errors import (
    InvalidParamsError,
    MalformedPayloadError,
    SecretKeyMissingError,
)
from market.valuation.tip.he import (
    CKKSParams,
    HEBackend,
    PlainBackend,
    TenSealBuyer,
    TenSealCKKS,
    load_buyer,
)

K = 64


def test_a_reloaded_buyer_decrypts_what_the_original_does(backend: HEBackend) -> None:
    rng = np.random.default_rng(7)
    q, g = rng.standard_normal(K) * 3.0, rng.standard_normal((300, K))
    buyer = backend.create_buyer(K)
    encrypted_query = buyer.encrypt_query(q)
    payload = backend.load_public(buyer.public_context()).score(encrypted_query, g)
    before = buyer.decrypt_scores(payload)

    raw = buyer.to_bytes(secret=True)  # type: ignore[attr-defined]
    for reloaded in (backend.load_buyer(raw), load_buyer(raw)):  # type: ignore[attr-defined]
        assert type(reloaded) is type(buyer) and reloaded.k == K
        after = reloaded.decrypt_scores(payload)
        np.testing.assert_array_equal(after, before)  # the same key and norm: the same floats
        np.testing.assert_allclose(after, g @ q, atol=1e-4)
        assert reloaded.public_context() == buyer.public_context()
        # It can encrypt a new query, which a provider scores and it decrypts.
        q2 = rng.standard_normal(K)
        public = backend.load_public(reloaded.public_context())
        again = reloaded.decrypt_scores(public.score(reloaded.encrypt_query(q2), g))
        np.testing.assert_allclose(again, g @ q2, atol=1e-4)


def test_saving_the_secret_must_be_asked_for(backend: HEBackend) -> None:
    buyer = backend.create_buyer(K)
    with pytest.raises(InvalidParamsError, match="secret=True"):
        buyer.to_bytes()  # type: ignore[attr-defined]


def test_the_saved_tenseal_context_holds_the_secret_key_and_is_refused_as_public() -> None:
    backend = TenSealCKKS()
    buyer = backend.create_buyer(K)
    raw = buyer.to_bytes(secret=True)
    with pytest.raises(MalformedPayloadError):
        backend.load_public(raw)  # a buyer context is not a public context
    with pytest.raises(MalformedPayloadError):
        backend.load_buyer(buyer.public_context())  # and the public context is no buyer


def test_a_buyer_saved_before_encrypting_cannot_decrypt_yet() -> None:
    buyer = TenSealCKKS().create_buyer(K)
    reloaded = load_buyer(buyer.to_bytes(secret=True))
    assert isinstance(reloaded, TenSealBuyer)
    with pytest.raises(InvalidParamsError, match="encrypt a query"):
        reloaded.decrypt_scores(b"")


def test_malformed_or_mismatched_buyer_contexts_are_refused() -> None:
    buyer = TenSealCKKS().create_buyer(K)
    raw = buyer.to_bytes(secret=True)
    for bad in (b"", b"nope", raw[:-10], PlainBackend().create_buyer(K).public_context()):
        with pytest.raises(MalformedPayloadError):
            load_buyer(bad)
    other = TenSealCKKS(CKKSParams(coeff_mod_bit_sizes=(60, 40, 40, 60)))
    with pytest.raises(MalformedPayloadError, match="made with"):
        other.load_buyer(raw)

    import tenseal as ts

    # A context without its secret key is no buyer.
    no_secret = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60])
    no_secret.make_context_public()
    with pytest.raises(SecretKeyMissingError):
        TenSealBuyer.restore(CKKSParams(), K, no_secret.serialize(), b"", 1.0)
