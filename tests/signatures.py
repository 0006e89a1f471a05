"""Malleated ECDSA signatures, for the tests that check nodes refuse what the contract would."""

from market.escrow.eip712 import SECP256K1_N


def high_s_twin(signature: bytes) -> bytes:
    """The other valid ECDSA signature over the same digest (s -> n - s, v 27 <-> 28):
    eth-account takes it, OpenZeppelin's ECDSA does not."""
    s = int.from_bytes(signature[32:64], "big")
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - signature[64]])
