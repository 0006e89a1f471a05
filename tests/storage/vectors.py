"""CID test vectors: content, chunk size, and the CID that `ipfs add --cid-version=1
--raw-leaves --chunker=size-N` gives it. Each was checked against the JS IPFS daemon (0.18.1
core, npm `ipfs` 0.66.1), and test_ipfs.py checks them again against the daemon of the run.
The raw ones are well-known CIDs (the empty block, "hello world\\n").
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CHUNK = 262_144


def pattern(size: int) -> bytes:
    """Deterministic bytes that differ from chunk to chunk (251 is prime to every chunk size)."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


@dataclass(frozen=True)
class Vector:
    name: str
    size: int
    chunk_size: int
    cid: str
    zeros: bool = False
    text: bytes | None = None

    def data(self) -> bytes:
        if self.text is not None:
            return self.text
        return bytes(self.size) if self.zeros else pattern(self.size)


VECTORS = [
    Vector(
        "empty", 0, DEFAULT_CHUNK, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    ),
    Vector(
        "hello world\\n",
        12,
        DEFAULT_CHUNK,
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
        text=b"hello world\n",
    ),
    # Exactly one chunk: still a single raw block.
    Vector(
        "one chunk",
        262_144,
        DEFAULT_CHUNK,
        "bafkreibruh455iawsviqslif5c7uurdcfdemh22mtnytyzvnzn75kpejxy",
    ),
    # One byte more: a dag-pb root over two raw leaves.
    Vector(
        "two chunks",
        262_145,
        DEFAULT_CHUNK,
        "bafybeiexg2oqkfnj56l7fcmawswqbijt5shq4b5rg6a546uwpkqqzwjioi",
    ),
    Vector(
        "1 MB of zeros",
        1_000_000,
        DEFAULT_CHUNK,
        "bafybeidide6lpcdutn3we5vvypssfhlq2n265w6dygwj37fyeklhlmfi34",
        zeros=True,
    ),
    # 175 chunks: one full parent of 174 leaves and a parent of one leaf, under a root.
    Vector(
        "175 chunks + 1 byte",
        175 * 262_144 + 1,
        DEFAULT_CHUNK,
        "bafybeihzhgkxa5ea4r5cr73r73tsf3ppwpstcxnsuyqxio3vy7xpikkhmi",
    ),
    # Three levels of parents, cheaply: 64-byte chunks.
    Vector(
        "depth 3, 64-byte chunks",
        174 * 174 * 64 + 65,
        64,
        "bafybeihlvonhs7jcsk3pi2bfm4t6ofol5vbjzjfv7zep3et6vtq3uqsfp4",
    ),
]
