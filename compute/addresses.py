"""Ethereum addresses and hashing for the pure core: keccak-256 and EIP-55 checksums.

Pure: keccak-256 comes from pycryptodome (`Crypto.Hash.keccak`, the same function as
`eth_utils.keccak`), because the chain libraries are off limits to `compute`'s pure modules.
"""

from __future__ import annotations

import re
from typing import Annotated

from Crypto.Hash import keccak as _keccak
from pydantic import AfterValidator

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak-256 (not SHA3-256)."""
    return _keccak.new(digest_bits=256, data=data).digest()


def checksum_address(value: str) -> str:
    """The EIP-55 checksummed form of a 0x address. All-lowercase and all-uppercase hex are
    accepted as is; mixed case must already be a valid checksum (it catches typos)."""
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        raise ValueError(f"{value!r} is not an address (0x and 40 hex digits)")
    digits = value[2:].lower()
    digest = keccak256(digits.encode()).hex()
    checksummed = "0x" + "".join(
        c.upper() if c.isalpha() and int(h, 16) >= 8 else c
        for c, h in zip(digits, digest[:40], strict=True)
    )
    body = value[2:]
    if body != body.lower() and body != body.upper() and value != checksummed:
        raise ValueError(f"{value!r} has an invalid EIP-55 checksum (expected {checksummed})")
    return checksummed


Address = Annotated[str, AfterValidator(checksum_address)]
"""A 0x address, EIP-55 checksummed on validation."""
