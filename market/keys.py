"""Keys derived from an account's key, so that an operator keeps one secret (its keystore).

A heavy node's encryption key pair (X25519, for PyNaCl sealed boxes) is derived from its
account key with a domain-separated hash: registering it on chain publishes only the public
half, and the node can re-derive the private half whenever it unlocks its keystore.
"""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from nacl.public import PrivateKey

_BOX_DOMAIN = b"market/heavy-node/x25519/v1"


def box_private_key(account: LocalAccount) -> PrivateKey:
    return PrivateKey(keccak(_BOX_DOMAIN + bytes(account.key)))


def box_public_key(account: LocalAccount) -> bytes:
    """The 32-byte public key registered on chain as the node's `encryptionKey`."""
    return bytes(box_private_key(account).public_key)
