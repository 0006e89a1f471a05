"""Homomorphic-encryption backends for TIP: the buyer's encrypted query, the providers' scores.

Roles and what crosses the wire:

1. The buyer calls `backend.create_buyer(k)`: a context whose secret key never leaves it.
2. `buyer.public_context()` is published with the job: the CKKS parameters and the two rotation
   (Galois) keys the providers need, no secret key, no public encryption key, no relinearization
   keys (the providers only multiply the ciphertext by plaintexts and rotate it).
3. `buyer.encrypt_query(q)` is `Enc(q)`, published with the job.
4. A provider calls `backend.load_public(public_context)` and `public.score(encrypted_query, G)`
   with its projected per-example gradients `G` (n x k), and returns the bytes it gets: the
   encrypted scores `Enc(G @ q)`, `ceil(n / slots)` ciphertexts.
5. The buyer calls `buyer.decrypt_scores(payload)` and gets the n scores, never `G`.

Every implementation follows the `HEBackend`, `BuyerContext` and `PublicContext` protocols, so the
layers above are written (and tested) once against both `TenSealCKKS` and `PlainBackend`.

Packing (`TenSealCKKS`): the buyer normalizes q to unit length (it keeps the norm and multiplies
it back after decryption), pads it with zeros to `k_pad` (the next power of two) and encrypts it
*replicated* over all `S = N/2` slots. The provider scores `S` examples per ciphertext with the
diagonal method (Halevi-Shoup) in baby-step/giant-step form: with `k_pad = A * B`,

    scores = sum_a rot( sum_b rot(Enc(q), b) * D'_{a,b}, a*B )

where `D'_{a,b}[j] = G[(j - a*B) mod S, (j + b) mod k_pad]` is a plaintext diagonal of the block
(pre-rotated in NumPy). The `B - 1` baby-step rotations of `Enc(q)` are computed once per query
and shared by every block; each block costs `k_pad` plaintext encodings and multiplications,
`A - 1` giant-step rotations (Horner's rule, so every rotation is by exactly 1 or B slots) and
one rescale. A provider with fewer examples than slots folds the k coordinates into `r` chunks
(`_Layout`), so its work stays proportional to n. The Galois keys published are only those of
the rotations this packing uses (1, B and the powers of two from B to k_pad / 2).
`compare_packings` measures it against TenSEAL's built-in `CKKSVector.matmul` and against one
ciphertext per example.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from market.valuation.tip.errors import (
    GradientRangeError,
    InvalidParamsError,
    MalformedPayloadError,
    SecretKeyMissingError,
)

FloatArray = NDArray[np.float64]

_MAGIC = b"TIP1"
MAX_COEFF_MODULUS_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
"""Largest total coefficient modulus (bits) per ring degree for 128-bit security (the
HomomorphicEncryption.org standard, as SEAL enforces it). The special prime counts too."""


# ------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class CKKSParams:
    """CKKS parameters of a valuation job, stated in the job as JSON (`to_json`).

    The default, N = 8192 with primes of 60, 40 and 60 bits and scale 2^40, is the smallest
    ring that gives the precision the fidelity target needs (see docs/valuation.md):

    - the computation has multiplicative depth 1 (ciphertext x plaintext, one rescale), so the
      chain is one 60-bit base prime, one 40-bit prime consumed by the rescale, and a 60-bit
      special prime for key switching: 160 bits, within the 218 bits N = 8192 allows at 128-bit
      security;
    - scale 2^40 leaves 2^19 of headroom over the 60-bit base prime after the rescale, and an
      absolute error around 1e-5 on unit-norm inner products at k = 1024 (Spearman against
      plaintext above 0.99999);
    - N = 4096 allows only 109 bits: with a 20-bit scale the error is near 0.1, and without a
      rescale (scale 2^30 x 2^25) it is ~5e-3, which is too coarse to keep the rank order of
      10,000 close scores, and it scores no faster per example (half the slots per ciphertext).
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    global_scale_bits: int = 40
    security_bits: int = 128
    packing: str = "replicated-query/bsgs-diagonal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(self.coeff_mod_bit_sizes))
        n = self.poly_modulus_degree
        if n not in MAX_COEFF_MODULUS_BITS:
            raise InvalidParamsError(
                f"poly_modulus_degree must be one of {sorted(MAX_COEFF_MODULUS_BITS)}, got {n}"
            )
        bits = self.coeff_mod_bit_sizes
        if len(bits) < 3:
            raise InvalidParamsError(
                "coeff_mod_bit_sizes needs a base prime, at least one prime to rescale by and a "
                f"special prime (3 sizes at least), got {list(bits)}"
            )
        if sum(bits) > MAX_COEFF_MODULUS_BITS[n]:
            raise InvalidParamsError(
                f"coeff_mod_bit_sizes sum to {sum(bits)} bits, above the "
                f"{MAX_COEFF_MODULUS_BITS[n]} bits N={n} allows at 128-bit security"
            )
        if self.security_bits != 128:
            raise InvalidParamsError("only 128-bit security parameters are supported")
        if not 20 <= self.global_scale_bits <= bits[1]:
            raise InvalidParamsError(
                f"global_scale_bits {self.global_scale_bits} must be between 20 and the size of "
                f"the prime the rescale drops ({bits[1]} bits)"
            )
        if self.headroom_bits < 8:
            raise InvalidParamsError(
                f"the base prime ({bits[0]} bits) leaves only {self.headroom_bits} bits over the "
                f"scale (2^{self.global_scale_bits}); make it at least 8 bits larger"
            )

    @property
    def slots(self) -> int:
        """Scores one ciphertext carries: N / 2."""
        return self.poly_modulus_degree // 2

    @property
    def headroom_bits(self) -> int:
        """Scores (of a unit-norm query) must stay below 2^headroom_bits in absolute value."""
        return self.coeff_mod_bit_sizes[0] - self.global_scale_bits - 1

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["coeff_mod_bit_sizes"] = list(self.coeff_mod_bit_sizes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CKKSParams:
        try:
            return cls(
                poly_modulus_degree=int(data["poly_modulus_degree"]),
                coeff_mod_bit_sizes=tuple(int(b) for b in data["coeff_mod_bit_sizes"]),
                global_scale_bits=int(data["global_scale_bits"]),
                security_bits=int(data.get("security_bits", 128)),
                packing=str(data.get("packing", cls.packing)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidParamsError):
                raise
            raise InvalidParamsError(f"not a CKKSParams JSON object: {data!r} ({exc})") from exc


def padded_width(k: int) -> int:
    """The power of two a k-vector is zero-padded to, so that its copies tile the slots."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidParamsError(f"k must be a positive int, got {k!r}")
    return 1 << (k - 1).bit_length()


def baby_steps(k_pad: int) -> int:
    """Baby-step count B of the diagonal method: the power of two nearest above sqrt(k_pad)."""
    return 1 << math.ceil(math.log2(k_pad) / 2)


# ------------------------------------------------------------------------------- protocols
@runtime_checkable
class BuyerContext(Protocol):
    """The buyer's side: holds the secret key (if the backend has one)."""

    k: int

    def public_context(self) -> bytes:
        """What providers need to score: never the secret key."""
        ...

    def encrypt_query(self, q: FloatArray) -> bytes:
        """`Enc(q)` for a length-k query."""
        ...

    def decrypt_scores(self, payload: bytes) -> FloatArray:
        """The scores a provider returned, in its example order."""
        ...


@runtime_checkable
class PublicContext(Protocol):
    """A provider's side: parameters and evaluation keys only."""

    k: int
    has_secret_key: bool

    def score(self, encrypted_query: bytes, gradients: FloatArray) -> bytes:
        """Encrypted `gradients @ q` (gradients: n x k), serialized for the buyer."""
        ...

    def decrypt_scores(self, payload: bytes) -> FloatArray:
        """Always raises `SecretKeyMissingError`."""
        ...


class HEBackend(Protocol):
    """A way to compute `G @ q` where the buyer holds q (encrypted) and a provider holds G."""

    name: str

    def create_buyer(self, k: int) -> BuyerContext: ...

    def load_public(self, public_context: bytes) -> PublicContext: ...

    def describe(self) -> dict[str, Any]:
        """What the job states about the scheme (JSON)."""
        ...


# ------------------------------------------------------------------------------- framing
def _pack(header: dict[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    head = dict(header, sizes=[len(b) for b in blobs])
    text = json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
    return _MAGIC + struct.pack(">I", len(text)) + text + b"".join(blobs)


def _unpack(payload: bytes, kind: str, backend: str) -> tuple[dict[str, Any], list[bytes]]:
    if not isinstance(payload, bytes | bytearray | memoryview) or bytes(payload[:4]) != _MAGIC:
        raise MalformedPayloadError(f"not a TIP {kind} payload (bad magic)")
    payload = bytes(payload)
    try:
        (length,) = struct.unpack(">I", payload[4:8])
        header = json.loads(payload[8 : 8 + length])
        sizes = [int(s) for s in header["sizes"]]
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise MalformedPayloadError(f"unreadable TIP {kind} header: {exc}") from exc
    if header.get("kind") != kind or header.get("backend") != backend:
        raise MalformedPayloadError(
            f"expected a {backend} {kind}, got a {header.get('backend')} {header.get('kind')}"
        )
    offset = 8 + length
    if offset + sum(sizes) != len(payload):
        raise MalformedPayloadError(f"TIP {kind} payload is truncated or has trailing bytes")
    blobs = []
    for size in sizes:
        blobs.append(payload[offset : offset + size])
        offset += size
    return header, blobs


def _check_query(q: Any, k: int) -> FloatArray:
    arr = np.asarray(q, dtype=np.float64)
    if arr.shape != (k,) or not np.all(np.isfinite(arr)):
        raise InvalidParamsError(f"the query must be {k} finite floats, got shape {arr.shape}")
    return arr


def _check_gradients(gradients: Any, k: int) -> FloatArray:
    arr = np.asarray(gradients, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != k:
        raise GradientRangeError(f"gradients must be an (n, {k}) array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise GradientRangeError("gradients must be finite (found NaN or infinity)")
    return arr


# ------------------------------------------------------------------------------- plaintext
@dataclass(frozen=True)
class PlainBackend:
    """Same API, no encryption: for tests and the plaintext baseline. `Enc(q)` is q itself."""

    name: str = "plain"

    def create_buyer(self, k: int) -> PlainBuyer:
        return PlainBuyer(k=_check_k(k, None))

    def load_public(self, public_context: bytes) -> PlainPublic:
        header, _ = _unpack(public_context, "public-context", self.name)
        return PlainPublic(k=int(header["k"]))

    def load_buyer(self, raw: bytes) -> PlainBuyer:
        """A buyer context saved by `PlainBuyer.to_bytes(secret=True)`."""
        header, blobs = _unpack(raw, "buyer-context", self.name)
        if blobs:
            raise MalformedPayloadError("a plain buyer context holds no key")
        try:
            k = int(header["k"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedPayloadError(f"a buyer context must state its k ({exc})") from None
        return PlainBuyer(k=_check_k(k, None))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}


@dataclass
class PlainBuyer:
    k: int

    def public_context(self) -> bytes:
        return _pack({"kind": "public-context", "backend": "plain", "k": self.k})

    def encrypt_query(self, q: FloatArray) -> bytes:
        arr = _check_query(q, self.k)
        return _pack({"kind": "query", "backend": "plain", "k": self.k}, [arr.tobytes()])

    def decrypt_scores(self, payload: bytes) -> FloatArray:
        header, blobs = _unpack(payload, "scores", "plain")
        return np.frombuffer(blobs[0], dtype=np.float64).copy()

    def to_bytes(self, *, secret: bool = False) -> bytes:
        """The buyer context, to keep (`PlainBackend.load_buyer` reads it back). `secret=True`
        acknowledges the bytes are the buyer's private side (here: no key at all)."""
        _require_secret_ack(secret)
        return _pack({"kind": "buyer-context", "backend": "plain", "k": self.k})


@dataclass
class PlainPublic:
    k: int
    has_secret_key: bool = False

    def score(self, encrypted_query: bytes, gradients: FloatArray) -> bytes:
        header, blobs = _unpack(encrypted_query, "query", "plain")
        if int(header["k"]) != self.k:
            raise MalformedPayloadError(f"query has k={header['k']}, context k={self.k}")
        q = np.frombuffer(blobs[0], dtype=np.float64)
        g = _check_gradients(gradients, self.k)
        scores = g @ q
        return _pack({"kind": "scores", "backend": "plain", "n": len(scores)}, [scores.tobytes()])

    def decrypt_scores(self, payload: bytes) -> FloatArray:
        raise SecretKeyMissingError("a public context cannot read scores: only the buyer can")


def _require_secret_ack(secret: bool) -> None:
    if secret is not True:
        raise InvalidParamsError(
            "a buyer context's bytes hold its secret key: pass secret=True to save them (keep "
            "them private); publish public_context() instead"
        )


def load_buyer(raw: bytes) -> BuyerContext:
    """A buyer context saved by `to_bytes(secret=True)`, whichever backend made it (the bytes
    name it; a TenSEAL context is loaded with the parameters it states)."""
    if not isinstance(raw, bytes | bytearray | memoryview) or bytes(raw[:4]) != _MAGIC:
        raise MalformedPayloadError("not a TIP buyer context (bad magic)")
    try:
        (length,) = struct.unpack(">I", bytes(raw[4:8]))
        header = json.loads(bytes(raw[8 : 8 + length]))
        backend = header["backend"]
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise MalformedPayloadError(f"unreadable TIP buyer context header: {exc}") from None
    if backend == "plain":
        return PlainBackend().load_buyer(bytes(raw))
    if backend == "tenseal-ckks":
        params = header.get("params")
        if not isinstance(params, dict):
            raise MalformedPayloadError("a TenSEAL buyer context must state its CKKS parameters")
        return TenSealCKKS(CKKSParams.from_json(params)).load_buyer(bytes(raw))
    raise MalformedPayloadError(f"a buyer context of an unknown backend {backend!r}")


def _check_k(k: int, params: CKKSParams | None) -> int:
    k_pad = padded_width(k)
    if params is not None and k_pad > params.slots:
        raise InvalidParamsError(
            f"k={k} (padded to {k_pad}) exceeds the {params.slots} slots of N="
            f"{params.poly_modulus_degree}; pick a larger poly_modulus_degree or a smaller k"
        )
    return k


# ------------------------------------------------------------------------------- TenSEAL
def _seal_bytes(obj: Any) -> bytes:
    """Serialize a SEAL object (ciphertext, Galois keys): SEAL's Python binding writes to files."""
    fd, path = tempfile.mkstemp(prefix="tip-")
    os.close(fd)
    try:
        obj.save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def _seal_load(obj: Any, seal_context: Any, data: bytes) -> Any:
    fd, path = tempfile.mkstemp(prefix="tip-")
    try:
        os.write(fd, data)
        os.close(fd)
        try:
            obj.load(seal_context, path)
        except (RuntimeError, ValueError) as exc:
            raise MalformedPayloadError(f"SEAL could not load the object: {exc}") from exc
        return obj
    finally:
        os.unlink(path)


def _galois_elt(step: int, n: int) -> int:
    """SEAL's Galois element of a left rotation by `step` slots: 3^step mod 2N."""
    return pow(3, step, 2 * n)


@dataclass(frozen=True)
class TenSealCKKS:
    """CKKS through TenSEAL (Microsoft SEAL underneath); see the module docstring."""

    params: CKKSParams = field(default_factory=CKKSParams)
    name: str = "tenseal-ckks"

    def create_buyer(self, k: int) -> TenSealBuyer:
        return TenSealBuyer(self.params, _check_k(k, self.params))

    def load_public(self, public_context: bytes) -> TenSealPublic:
        header, blobs = _unpack(public_context, "public-context", self.name)
        params = CKKSParams.from_json(header["params"])
        if params != self.params:
            raise MalformedPayloadError(
                f"public context was made with {params}, this backend has {self.params}"
            )
        return TenSealPublic(params, int(header["k"]), blobs[0], blobs[1])

    def load_buyer(self, raw: bytes) -> TenSealBuyer:
        """A buyer context saved by `TenSealBuyer.to_bytes(secret=True)`: the same secret key,
        Galois keys and query norm, so it decrypts what the saved one would have."""
        header, blobs = _unpack(raw, "buyer-context", self.name)
        try:
            params = CKKSParams.from_json(header["params"])
            k = int(header["k"])
            norm = header["norm"]
            ctx_bytes, galois = blobs
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedPayloadError(f"a malformed TenSEAL buyer context ({exc})") from None
        if params != self.params:
            raise MalformedPayloadError(
                f"buyer context was made with {params}, this backend has {self.params}"
            )
        if norm is not None and (
            not isinstance(norm, int | float) or isinstance(norm, bool) or not math.isfinite(norm)
        ):
            raise MalformedPayloadError("a buyer context's query norm must be a finite number")
        return TenSealBuyer.restore(
            params, _check_k(k, params), ctx_bytes, galois, None if norm is None else float(norm)
        )

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "ckks": self.params.to_json()}


class _Layout:
    """Where examples and coordinates sit in the slots, for one k under one set of parameters.

    The query is replicated with period `k_pad` over the `S` slots. A provider with n examples
    picks a fold `r` (a power of two, at most `k_pad / B`): each ciphertext then scores
    `m = S / r` examples with `k' = k_pad / r` diagonals, and slot `j` (segment `j // k_pad`,
    offset `w = j % k_pad`, chunk `c = w // k'`, `t = w % k'`) works on example
    `e = (j // k_pad) * k' + t`, summing coordinates `(w + i) % k_pad` for `i < k'`. The `r`
    chunks of an example are then added by rotations of `k' * 2^u` slots, which leaves its score
    in slot `(e // k') * k_pad + e % k'`. `r = 1` is the plain diagonal method with one example
    per slot; a larger `r` keeps the work proportional to n when n is below the slot count.
    """

    def __init__(self, params: CKKSParams, k: int) -> None:
        self.k = k
        self.k_pad = padded_width(k)
        self.slots = params.slots
        self.baby = min(baby_steps(self.k_pad), self.k_pad)
        self.max_fold = self.k_pad // self.baby
        steps = {1, self.baby}
        step = self.baby
        while step <= self.k_pad // 2:
            steps.add(step)
            step *= 2
        self.steps = sorted(s for s in steps if s < self.slots)

    def fold_for(self, n: int) -> int:
        """The fold with the least work for n examples (encodings plus ~3 per rotation)."""
        best, best_cost = 1, math.inf
        r = 1
        while r <= self.max_fold:
            blocks = -(-n * r // self.slots)
            diagonals = self.k_pad // r
            rotations = diagonals // self.baby - 1 + int(math.log2(r))
            cost = blocks * (diagonals + 3 * rotations)
            if cost < best_cost:
                best, best_cost = r, cost
            r *= 2
        return best

    def per_block(self, fold: int) -> int:
        return self.slots // fold

    def score_slots(self, fold: int) -> NDArray[np.int64]:
        """Slot of each example's score in a result ciphertext, in example order."""
        kp = self.k_pad // fold
        e = np.arange(self.per_block(fold))
        return (e // kp) * self.k_pad + e % kp


class TenSealBuyer:
    """The buyer's CKKS context: secret key, encoder, decryptor."""

    def __init__(self, params: CKKSParams, k: int) -> None:
        import tenseal as ts
        import tenseal.sealapi as sealapi

        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
        self._bind(params, k, ctx)
        keygen = sealapi.KeyGenerator(self._seal, self._secret)
        elts = [_galois_elt(s, params.poly_modulus_degree) for s in self._layout.steps]
        # Only the rotations the packing uses, serialized seeded (half the bytes).
        self._galois = _seal_bytes(keygen.create_galois_keys(elts)) if elts else b""
        self._norm: float | None = None

    def _bind(self, params: CKKSParams, k: int, ctx: Any) -> None:
        import tenseal.sealapi as sealapi

        self.params = params
        self.k = k
        self._layout = _Layout(params, k)
        self._ctx = ctx
        self._ctx.global_scale = 2.0**params.global_scale_bits
        self._seal = self._ctx.seal_context().data
        self._secret = self._ctx.secret_key().data
        self._encoder = sealapi.CKKSEncoder(self._seal)
        self._decryptor = sealapi.Decryptor(self._seal, self._secret)

    @classmethod
    def restore(
        cls, params: CKKSParams, k: int, ctx_bytes: bytes, galois: bytes, norm: float | None
    ) -> TenSealBuyer:
        """A buyer context from its saved parts (`TenSealCKKS.load_buyer` reads them)."""
        import tenseal as ts

        try:
            ctx = ts.context_from(ctx_bytes)
        except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError
            raise MalformedPayloadError(f"TenSEAL could not load the context: {exc}") from exc
        if not ctx.is_private() or not ctx.has_secret_key():
            raise SecretKeyMissingError("the saved buyer context holds no secret key")
        buyer = cls.__new__(cls)
        buyer._bind(params, k, ctx)
        buyer._galois = galois
        buyer._norm = norm
        return buyer

    def to_bytes(self, *, secret: bool = False) -> bytes:
        """Everything this context needs to decrypt later, to keep in a private file: the
        TenSEAL context *with its secret key*, the Galois keys (so `public_context()` gives
        the same bytes after `TenSealCKKS.load_buyer`) and the query's norm. `secret=True`
        acknowledges that whoever reads the bytes can decrypt every score."""
        _require_secret_ack(secret)
        ctx_bytes = self._ctx.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        header = {
            "kind": "buyer-context",
            "backend": "tenseal-ckks",
            "k": self.k,
            "params": self.params.to_json(),
            "norm": self._norm,
        }
        return _pack(header, [ctx_bytes, self._galois])

    @property
    def has_secret_key(self) -> bool:
        return True

    def public_context(self) -> bytes:
        ctx_bytes = self._ctx.serialize(
            save_public_key=False,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        header = {
            "kind": "public-context",
            "backend": "tenseal-ckks",
            "k": self.k,
            "params": self.params.to_json(),
            "galois_steps": self._layout.steps,
        }
        return _pack(header, [ctx_bytes, self._galois])

    def encrypt_query(self, q: FloatArray) -> bytes:
        """Encrypt q / |q| replicated over every slot; |q| stays here and scales the scores back
        after decryption (so the scores keep their precision whatever the size of q)."""
        import tenseal as ts

        arr = _check_query(q, self.k)
        norm = float(np.linalg.norm(arr))
        self._norm = norm
        unit = arr / norm if norm > 0 else arr
        padded = np.zeros(self._layout.k_pad)
        padded[: self.k] = unit
        replicated = np.tile(padded, self._layout.slots // self._layout.k_pad)
        vec = ts.ckks_vector(self._ctx, replicated.tolist())
        header = {"kind": "query", "backend": "tenseal-ckks", "k": self.k}
        return _pack(header, [vec.serialize()])

    def decrypt_scores(self, payload: bytes) -> FloatArray:
        import tenseal.sealapi as sealapi

        if self._norm is None:
            raise InvalidParamsError("encrypt a query before decrypting its scores")
        header, blobs = _unpack(payload, "scores", "tenseal-ckks")
        n, fold = int(header["n"]), int(header["fold"])
        if fold < 1 or fold > self._layout.max_fold or fold & (fold - 1):
            raise MalformedPayloadError(f"fold {fold} is not a packing of this context")
        per_block = self._layout.per_block(fold)
        if len(blobs) != -(-n // per_block):
            raise MalformedPayloadError(f"{len(blobs)} ciphertexts cannot carry {n} scores")
        where = self._layout.score_slots(fold)
        out = []
        for blob in blobs:
            ct = _seal_load(sealapi.Ciphertext(), self._seal, blob)
            plain = sealapi.Plaintext()
            self._decryptor.decrypt(ct, plain)
            out.append(np.asarray(self._encoder.decode_double(plain), dtype=np.float64)[where])
        scores = np.concatenate(out)[:n] if out else np.zeros(0)
        return scores * self._norm


class TenSealPublic:
    """A provider's CKKS context: parameters and the packing's Galois keys, no secret key."""

    has_secret_key = False

    def __init__(self, params: CKKSParams, k: int, ctx_bytes: bytes, galois: bytes) -> None:
        import tenseal as ts
        import tenseal.sealapi as sealapi

        self.params = params
        self.k = _check_k(k, params)
        self._layout = _Layout(params, k)
        try:
            self._ctx = ts.context_from(ctx_bytes)
        except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError
            raise MalformedPayloadError(f"TenSEAL could not load the context: {exc}") from exc
        if self._ctx.is_private() or self._ctx.has_secret_key():
            raise MalformedPayloadError(
                "the published context holds a secret key: refuse it (it would expose the "
                "buyer's key) and ask the buyer to publish a public context"
            )
        self._seal = self._ctx.seal_context().data
        self._galois = sealapi.GaloisKeys()
        if galois:
            _seal_load(self._galois, self._seal, galois)
        self._evaluator = sealapi.Evaluator(self._seal)
        self._encoder = sealapi.CKKSEncoder(self._seal)

    @property
    def tenseal_context(self) -> Any:
        """The underlying TenSEAL context (public: `is_private()` is False)."""
        return self._ctx

    def load_query(self, encrypted_query: bytes) -> Any:
        """The query's SEAL ciphertext, checked against the parameters."""
        import tenseal as ts

        header, blobs = _unpack(encrypted_query, "query", "tenseal-ckks")
        if int(header["k"]) != self.k:
            raise MalformedPayloadError(f"query has k={header['k']}, context k={self.k}")
        try:
            vec = ts.ckks_vector_from(self._ctx, blobs[0])
        except Exception as exc:
            raise MalformedPayloadError(f"TenSEAL could not load the query: {exc}") from exc
        if vec.size() != self._layout.slots:
            raise MalformedPayloadError("the query is not replicated over every slot")
        (ct,) = vec.data.ciphertext()
        levels = len(self.params.coeff_mod_bit_sizes) - 1
        if ct.size() != 2 or ct.coeff_modulus_size() != levels:
            raise MalformedPayloadError("the query ciphertext is not a fresh encryption")
        return ct

    def score(self, encrypted_query: bytes, gradients: FloatArray) -> bytes:
        g = _check_gradients(gradients, self.k)
        limit = 2.0 ** (self.params.headroom_bits - 1)
        if len(g) and np.linalg.norm(g, axis=1).max() >= limit:
            raise GradientRangeError(
                f"a gradient has norm {np.linalg.norm(g, axis=1).max():.3g}, above the "
                f"{limit:.3g} the CKKS headroom allows; scale the model's loss down"
            )
        ct = self.load_query(encrypted_query)
        fold = self._layout.fold_for(len(g))
        blobs = [_seal_bytes(c) for c in self.score_ciphertexts(ct, g, fold)]
        header = {"kind": "scores", "backend": "tenseal-ckks", "n": len(g), "fold": fold}
        return _pack(header, blobs)

    def score_ciphertexts(self, query_ct: Any, gradients: FloatArray, fold: int) -> list[Any]:
        """Baby-step/giant-step diagonal product of the replicated query with each block of
        `slots / fold` examples (see `_Layout`); one rescaled ciphertext per block."""
        import tenseal.sealapi as sealapi

        ev, enc, gk, lay = self._evaluator, self._encoder, self._galois, self._layout
        s, kp, b_steps = lay.slots, lay.k_pad, lay.baby
        diag_count = kp // fold  # k'
        giant = diag_count // b_steps
        per_block = lay.per_block(fold)
        if len(gradients) == 0:
            return []
        baby = [query_ct]
        for _ in range(1, b_steps):
            rotated = sealapi.Ciphertext()
            ev.rotate_vector(baby[-1], 1, gk, rotated)
            baby.append(rotated)
        parms = query_ct.parms_id()
        scale = 2.0**self.params.global_scale_bits
        j = np.arange(s)
        out = []
        for start in range(0, len(gradients), per_block):
            block = np.zeros((per_block, kp))
            rows_here = gradients[start : start + per_block]
            block[: len(rows_here), : self.k] = rows_here
            flat = block.ravel()
            acc = None
            for a in reversed(range(giant)):
                src = (j - a * b_steps) % s  # pre-rotation of the plaintext diagonals
                w = src % kp
                example = (src // kp) * diag_count + w % diag_count
                coord = (w[None, :] + a * b_steps + np.arange(b_steps)[:, None]) % kp
                diagonals = np.take(flat, example[None, :] * kp + coord)  # (B, S)
                inner = None
                for b, values in enumerate(diagonals.tolist()):
                    plain = sealapi.Plaintext()
                    enc.encode(values, parms, scale, plain)
                    prod = sealapi.Ciphertext()
                    ev.multiply_plain(baby[b], plain, prod)
                    if inner is None:
                        inner = prod
                    else:
                        ev.add_inplace(inner, prod)
                if acc is None:
                    acc = inner
                else:
                    ev.rotate_vector_inplace(acc, b_steps, gk)
                    ev.add_inplace(acc, inner)
            step = diag_count
            while step < kp:  # add the fold's chunks: score of e ends in its chunk-0 slot
                rotated = sealapi.Ciphertext()
                ev.rotate_vector(acc, step, gk, rotated)
                ev.add_inplace(acc, rotated)
                step *= 2
            ev.rescale_to_next_inplace(acc)
            out.append(acc)
        return out

    def decrypt_scores(self, payload: bytes) -> FloatArray:
        raise SecretKeyMissingError(
            "a public context holds no secret key and cannot decrypt scores: only the buyer can"
        )


# ------------------------------------------------------------------------------- packings
def compare_packings(
    k: int = 256,
    n: int = 10_000,
    params: CKKSParams | None = None,
    seed: int = 0,
    per_example_sample: int = 64,
    matmul_blocks: int | None = 1,
) -> dict[str, dict[str, float]]:
    """Time three ways to score n examples under encryption, in one process, one after another.

    - `bsgs_diagonal` (what `TenSealCKKS` does): replicated query, baby-step/giant-step diagonal
      method, `ceil(n / slots)` result ciphertexts;
    - `tenseal_matmul`: TenSEAL's built-in `CKKSVector.matmul` of `Enc(q)` with each
      (k x slots) block (a diagonal method with k rotations per block, TenSEAL's default
      power-of-two Galois keys);
    - `per_example`: one `Enc(q).dot(g_i)` and one result ciphertext per example.

    `per_example` is timed on `per_example_sample` examples and `tenseal_matmul` on
    `matmul_blocks` blocks (None: all), and both are extrapolated linearly to n (reported with
    `extrapolated_from`). Each entry has `seconds` (for n examples), `scores_per_s`,
    `max_abs_error` against NumPy on the measured part, and `result_bytes` for n examples.
    """
    import tenseal as ts

    params = params or CKKSParams()
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, k))
    q = rng.standard_normal(k)
    q /= np.linalg.norm(q)
    ref = g @ q
    results: dict[str, dict[str, float]] = {}

    backend = TenSealCKKS(params)
    buyer = backend.create_buyer(k)
    public = backend.load_public(buyer.public_context())
    enc_q = buyer.encrypt_query(q)
    t0 = time.perf_counter()
    payload = public.score(enc_q, g)
    seconds = time.perf_counter() - t0
    got = buyer.decrypt_scores(payload)
    results["bsgs_diagonal"] = _entry(seconds, n, np.abs(got - ref).max(), len(payload), n)

    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    ctx.global_scale = 2.0**params.global_scale_bits
    ctx.generate_galois_keys()
    vec = ts.ckks_vector(ctx, q.tolist())
    s = params.slots
    blocks = list(range(0, n, s))[: matmul_blocks or None]
    t0 = time.perf_counter()
    errs, size = [], 0
    for start in blocks:
        res = vec.matmul(g[start : start + s].T.tolist())
        size += len(res.serialize())
        errs.append(np.abs(np.asarray(res.decrypt()) - ref[start : start + s]).max())
    measured = min(n, len(blocks) * s)
    seconds = (time.perf_counter() - t0) * n / measured
    results["tenseal_matmul"] = _entry(seconds, n, max(errs), size * n / measured, measured)

    sample = min(per_example_sample, n)
    t0 = time.perf_counter()
    errs, size = [], 0
    for i in range(sample):
        res = vec.dot(g[i].tolist())
        size += len(res.serialize())
        errs.append(abs(res.decrypt()[0] - ref[i]))
    seconds = (time.perf_counter() - t0) * n / sample
    results["per_example"] = _entry(seconds, n, max(errs), size * n / sample, sample)
    return results


def _entry(seconds: float, n: int, err: float, size: float, measured: int) -> dict[str, float]:
    return {
        "seconds": float(seconds),
        "scores_per_s": float(n / seconds) if seconds > 0 else math.inf,
        "max_abs_error": float(err),
        "result_bytes": float(size),
        "extrapolated_from": float(measured),
    }


BACKENDS: dict[str, Callable[[], HEBackend]] = {
    "tenseal-ckks": TenSealCKKS,
    "plain": PlainBackend,
}
"""Backends by the name a job states."""
