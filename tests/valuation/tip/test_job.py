"""The TIP terms a job states, and the whole exchange through them with either backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

from market.valuation.tip.errors import InvalidParamsError
from market.valuation.tip.he import HEBackend, TenSealCKKS
from market.valuation.tip.influence import influence_scores, projected_gradients
from market.valuation.tip.job import TipTerms
from tests.valuation.tip.conftest import trained_buyer


def test_terms_round_trip_through_json() -> None:
    buyer = trained_buyer("breast_cancer", "mlp")
    terms = TipTerms.for_model(buyer.model, buyer.theta, buyer.config, projection_seed=7, k=256)
    data = json.loads(terms.canonical())
    assert data["ckks"] == {
        "poly_modulus_degree": 8192,
        "coeff_mod_bit_sizes": [60, 40, 60],
        "global_scale_bits": 40,
        "security_bits": 128,
        "packing": "replicated-query/bsgs-diagonal",
    }
    assert data["damping"] == buyer.config.weight_decay
    assert "semi-honest" in data["threat_model"]
    assert TipTerms.from_json(data) == terms
    with pytest.raises(InvalidParamsError):
        TipTerms.from_json({"model": {}})
    with pytest.raises(InvalidParamsError):
        terms.rebuild(buyer.theta + 1e-9)


def test_a_valuation_through_the_published_terms(backend: HEBackend) -> None:
    """Buyer publishes terms, parameters, public context and Enc(q); a provider rebuilds what it
    needs from them alone and returns encrypted scores; the buyer decrypts them."""
    buyer = trained_buyer("digits", "softmax")
    terms = TipTerms.for_model(
        buyer.model,
        buyer.theta,
        buyer.config,
        projection_seed=buyer.projection.seed,
        k=buyer.projection.k,
        backend=backend,
    )
    enc = backend.create_buyer(terms.k)
    published = (terms.canonical(), buyer.theta.tobytes(), enc.public_context())
    encrypted_query = enc.encrypt_query(buyer.query.q)

    # The provider's node: only the published bytes and its own data.
    wire_terms, wire_theta, wire_context = published
    provider_terms = TipTerms.from_json(json.loads(wire_terms))
    theta = np.frombuffer(wire_theta, dtype=np.float64)
    model, projection, provider_backend = provider_terms.rebuild(theta)
    assert provider_backend.name == backend.name
    data = buyer.market.provider("flipped")
    grads = projected_gradients(model, theta, data.x, data.y, projection)
    payload = provider_backend.load_public(wire_context).score(encrypted_query, grads)

    scores = enc.decrypt_scores(payload)
    np.testing.assert_allclose(scores, influence_scores(grads, buyer.query), atol=1e-4)
    assert scores.sum() < 0
    if isinstance(backend, TenSealCKKS):
        assert len(wire_context) < 4_000_000 and b"secret" not in wire_terms
