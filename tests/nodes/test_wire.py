"""The submission digest encoded by hand is the one a wallet signs for the typed data, and the
fast signing and recovery agree with eth-account's."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from compute.sharing import scheme_named
from market.escrow.eip712 import Domain, recover_strict, sign_digest
from nodes.wire import SUBMISSION_TYPES, WireError, open_sealed, seal, submission_digest

DOMAIN = Domain(31337, "0x" + "ab" * 20)


@settings(max_examples=25, deadline=None)
@given(
    job=st.integers(0, 2**256 - 1),
    recipient=st.integers(0, 255),
    nonce=st.integers(0, 2**256 - 1),
    sealed=st.binary(min_size=1, max_size=64),
    payload=st.binary(max_size=16),
)
def test_the_hand_encoded_digest_is_the_typed_data_hash(job, recipient, nonce, sealed, payload):
    dataset = secrets.token_bytes(32)
    digest = submission_digest(DOMAIN, job, dataset, recipient, nonce, sealed, payload)
    typed = encode_typed_data(
        domain_data=DOMAIN.as_json(),
        message_types=SUBMISSION_TYPES,
        message_data={
            "jobId": job, "datasetId": dataset, "recipient": recipient, "nonce": nonce,
            "shareHash": keccak(sealed), "payloadHash": keccak(payload) if payload else bytes(32),
        },
    )  # fmt: skip
    assert digest == _hash_eip191_message(typed)


def test_fast_signatures_are_eth_accounts() -> None:
    account = Account.create()
    for _ in range(20):
        digest = secrets.token_bytes(32)
        signature = sign_digest(account, digest)
        assert signature == bytes(account.unsafe_sign_hash(digest).signature)
        assert recover_strict(digest, signature) == account.address


def test_a_sealed_seed_opens_to_the_share_it_stands_for() -> None:
    key = PrivateKey.generate()
    for name in ("additive", "shamir"):
        scheme = scheme_named(name, n=3, threshold=2 if name == "shamir" else None)
        seed = secrets.token_bytes(16)
        share = scheme.seed_share(seed, (1_000,))
        sealed = seal(share, bytes(key.public_key), seed)
        assert len(sealed) == 48 + 17  # the seed, not 8,000 bytes
        assert np.array_equal(open_sealed(sealed, key, 1_000, scheme), share)
        vector = seal(share, bytes(key.public_key))
        assert np.array_equal(open_sealed(vector, key, 1_000, scheme), share)
    with pytest.raises(WireError, match="values"):
        open_sealed(sealed, key, 1_000)  # a node that does not know the scheme takes vectors only


def test_a_shamir_share_outside_the_field_is_refused() -> None:
    key = PrivateKey.generate()
    shamir = scheme_named("shamir", n=3, threshold=2)
    bad = np.array([1, 2**61 - 1, 3], dtype=np.uint64)
    with pytest.raises(WireError, match="outside the field"):
        open_sealed(seal(bad, bytes(key.public_key)), key, 3, shamir)
    good = np.array([1, 2**61 - 2, 3], dtype=np.uint64)
    assert np.array_equal(open_sealed(seal(good, bytes(key.public_key)), key, 3, shamir), good)


def test_an_ensemble_round_s_statistics_travel_as_one_kind_per_stage() -> None:
    """A node stores one peer message per kind and sender: the blends (stage 1) must not be
    taken for a second copy of the statistics (stage 0)."""
    from compute.messages import Statistic
    from nodes.wire import peer_message, peer_payload

    value = np.arange(4, dtype=np.uint64)
    kinds = []
    for stage in (0, 1):
        payload = peer_payload(Statistic("7", 2, 1, ("0xaa", "0xbb"), value, stage))
        kinds.append(payload["kind"])
        back = peer_message(payload)
        assert isinstance(back, Statistic) and back.stage == stage
        assert back.participants == ("0xaa", "0xbb") and np.array_equal(back.value, value)
    assert kinds == ["statistic", "blends"]
