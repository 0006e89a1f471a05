"""Randomness for sharing, always passed in by the caller.

Nothing in `compute` draws randomness it was not given. A `Randomness` is either

- a `numpy.random.Generator`, seeded, for tests and reproducible simulations; or
- a `RandomBytes` callable, `rng(n) -> n random bytes`, for production.

`os_rng()` is the production source: an AES-128 counter-mode stream (the NIST SP 800-90A
CTR_DRBG construction, without reseeding) keyed with 16 bytes from the operating system's CSPRNG
through `secrets`. It is a cryptographic generator, unlike NumPy's PCG64, and it is also the
fastest source here (about 1 ns per 64-bit word with AES-NI), which matters when 1,000 providers
each mask 100,000 values. `os_random_bytes` is the OS CSPRNG itself, slower but with no state.
`AesCtrRandom.from_seed` builds the same stream from a public seed: reproducible, for
benchmarks and tests only, never for real shares.

Differential-privacy noise is the one exception: OpenDP draws it with its own CSPRNG (see
`compute.dp`), because its guarantee rests on its own samplers.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

import numpy as np
from Crypto.Cipher import AES
from numpy.typing import NDArray

RandomBytes = Callable[[int], bytes | bytearray]
"""A callable returning `n` uniformly random bytes."""

Randomness = np.random.Generator | RandomBytes
"""What every sharing function takes: a seeded NumPy generator or a random-bytes callable."""

_WORD = 8
_BLOCK = 16
_MAX_BLOCKS = 1 << 16
"""Counter blocks encrypted per call: bounds the reusable counter buffer (1 MiB)."""


class AesCtrRandom:
    """AES-128 in counter mode as a stream of random bytes.

    Block `j` is `AES_k(2j || 2j + 1)` (two little-endian 64-bit words). No input block ever
    repeats within one stream, so the output is indistinguishable from random for as long as
    AES is a pseudorandom permutation (far beyond the 2^63 blocks one stream could produce).
    Not thread-safe: give each thread its own.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise ValueError(f"AesCtrRandom needs a 16-byte key, got {len(key)} bytes")
        self._cipher = AES.new(key, AES.MODE_ECB)
        self._counter = 0
        self._words = np.zeros(0, dtype=np.uint64)  # counter blocks, reused between calls
        self._offsets = np.zeros(0, dtype=np.uint64)

    @classmethod
    def from_seed(cls, seed: int | str | bytes) -> AesCtrRandom:
        """A reproducible stream for benchmarks and tests; the key is SHA-256 of the seed."""
        material = seed if isinstance(seed, bytes) else str(seed).encode()
        return cls(hashlib.sha256(b"compute.randomness/" + material).digest()[:16])

    def __call__(self, n: int) -> bytearray:
        words = np.empty(-(-n // _BLOCK) * 2, dtype=np.uint64)
        self.fill(words)
        return bytearray(words.view(np.uint8).data[:n])

    def fill(self, out: NDArray[np.uint64]) -> None:
        """Overwrite the C-contiguous `out` with random words (rounded up to whole blocks: an
        odd word count uses, and discards, half a block)."""
        flat = out.reshape(-1)
        if not out.flags.c_contiguous or flat.dtype != np.uint64:
            raise ValueError("fill needs a C-contiguous uint64 array")
        for start in range(0, flat.size, 2 * _MAX_BLOCKS):
            chunk = flat[start : start + 2 * _MAX_BLOCKS]
            blocks = chunk.size // 2
            if blocks:
                self._encrypt(chunk[: 2 * blocks].view(np.uint8).data, blocks)
            if chunk.size % 2:
                tail = np.empty(2, dtype=np.uint64)
                self._encrypt(tail.view(np.uint8).data, 1)
                chunk[-1] = tail[0]

    def _encrypt(self, out: memoryview, blocks: int) -> None:
        # Block j of this call is the word pair (c + 2j, c + 2j + 1): the stream counts in
        # 64-bit words, so no block repeats, and the counters are one contiguous addition.
        words = 2 * blocks
        if self._words.size < words:
            self._words = np.empty(words, dtype=np.uint64)
            self._offsets = np.arange(words, dtype=np.uint64)
        counters = np.add(self._offsets[:words], np.uint64(self._counter), out=self._words[:words])
        self._counter += words
        self._cipher.encrypt(counters.view(np.uint8).data, output=out)


def os_rng() -> AesCtrRandom:
    """A fresh production random source keyed from the OS CSPRNG (`secrets`)."""
    return AesCtrRandom(secrets.token_bytes(16))


def os_random_bytes(n: int) -> bytes:
    """The OS CSPRNG itself (`secrets.token_bytes`), usable wherever a `RandomBytes` is."""
    return secrets.token_bytes(n)


def random_words(
    rng: Randomness, shape: int | tuple[int, ...], out: NDArray[np.uint64] | None = None
) -> NDArray[np.uint64]:
    """Uniform 64-bit words (elements of Z_2^64) of the given shape, written into `out` (a
    C-contiguous uint64 array of that shape) when it is given."""
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if out is None:
        out = np.empty(dims, dtype=np.uint64)
    elif out.shape != dims or out.dtype != np.uint64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint64 array of shape {dims}")
    if isinstance(rng, AesCtrRandom):
        rng.fill(out)
    elif isinstance(rng, np.random.Generator):
        out[...] = rng.integers(0, 2**64 - 1, size=dims, dtype=np.uint64, endpoint=True)
    else:
        raw = rng(out.size * _WORD)
        if len(raw) != out.size * _WORD:
            raise ValueError(f"random source returned {len(raw)} bytes, {out.size * _WORD} asked")
        out.reshape(-1)[:] = np.frombuffer(raw, dtype="<u8")
    return out
