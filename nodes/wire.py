"""What travels between nodes over HTTP, and how it is sealed and signed.

- A light node's submission carries one share, sealed (PyNaCl `SealedBox`) to the registered
  X25519 key of the heavy node it is for (the share's little-endian words, or, for a share
  that is pure randomness, `SEED_TAG` and the 16-byte seed it expands from), and the dataset
  owner's EIP-712 signature over
  `Submission(jobId, datasetId, recipient, nonce, shareHash, payloadHash)` under the
  marketplace's domain, where `shareHash` is keccak-256 of the sealed bytes and `payloadHash`
  that of the payload a valuation job adds (the CKKS-encrypted scores; zero without one).
  Only that heavy node can open the share; anyone can check who sent it and that it was not
  altered or redirected.
- Heavy-node-to-heavy-node messages (agreements, partials, result signatures) are canonical
  JSON signed by the sender's account (EIP-191), checked against the job's on-chain committee.
"""

from __future__ import annotations

import base64
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from numpy.typing import NDArray

from compute import field
from compute.messages import Agreement, Partial, Statistic
from compute.sharing import SEED_BYTES, Scheme, ShamirScheme
from market.escrow.documents import canonical_json
from market.escrow.eip712 import (
    Domain,
    InvalidSignature,
    participation_digest,
    recover_strict,
    sign_digest,
)
from nodes.errors import NodeError

SUBMISSION_TYPES = {
    "Submission": [
        {"name": "jobId", "type": "uint256"},
        {"name": "datasetId", "type": "bytes32"},
        {"name": "recipient", "type": "uint8"},
        {"name": "nonce", "type": "uint256"},
        {"name": "shareHash", "type": "bytes32"},
        {"name": "payloadHash", "type": "bytes32"},
    ]
}


class WireError(NodeError, ValueError):
    """A message that is malformed, not signed by whom it claims, or not for this node."""


def encode_vector(values: NDArray[np.uint64]) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<u8").tobytes()).decode()


def decode_vector(text: str, length: int | None = None) -> NDArray[np.uint64]:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise WireError("a vector is not valid base64") from None
    if len(raw) % 8:
        raise WireError("a vector's byte length is not a multiple of 8")
    vector = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
    if length is not None and vector.shape != (length,):
        raise WireError(f"a vector has {vector.size} values, {length} expected")
    return vector


# ----------------------------------------------------------------------------- submissions
SEED_TAG = b"\x01"
"""The first byte of a sealed seed (a seed's plaintext is 17 bytes, never a multiple of 8, so
it is never mistaken for a vector)."""


def seal(share: NDArray[np.uint64], public_key: bytes, seed: bytes | None = None) -> bytes:
    """The share sealed to `public_key`: the vector, or, when the share is the expansion of
    `seed` (seed compression), the tagged seed alone."""
    plain = SEED_TAG + seed if seed is not None else np.ascontiguousarray(share, "<u8").tobytes()
    return SealedBox(PublicKey(public_key)).encrypt(plain)


def open_sealed(
    sealed: bytes, private_key: PrivateKey, length: int, scheme: Scheme | None = None
) -> NDArray[np.uint64]:
    """The share in a sealed box: a vector of `length` words, or, with the job's `scheme`, a
    tagged seed expanded to the share it stands for."""
    try:
        plain = SealedBox(private_key).decrypt(sealed)
    except CryptoError:
        raise WireError("the share is not sealed to this heavy node's key") from None
    if scheme is not None and len(plain) == len(SEED_TAG) + SEED_BYTES and plain[:1] == SEED_TAG:
        return scheme.seed_share(plain[1:], (length,))
    if len(plain) != 8 * length:
        raise WireError(f"the share has {len(plain) // 8} values, {length} expected")
    vector = np.frombuffer(plain, dtype="<u8").astype(np.uint64)
    if isinstance(scheme, ShamirScheme) and vector.size and int(vector.max()) >= field.P:
        # Heavy nodes add shares lazily (several before a reduction): one outside the field
        # would wrap the running sum.
        raise WireError("a share value is outside the field (at least 2^61 - 1)")
    return vector


def payload_hash(payload: bytes) -> bytes:
    return keccak(payload) if payload else bytes(32)


SUBMISSION_TYPEHASH = keccak(
    text="Submission(uint256 jobId,bytes32 datasetId,uint8 recipient,uint256 nonce,"
    "bytes32 shareHash,bytes32 payloadHash)"
)


def submission_digest(
    domain: Domain,
    job_id: int,
    dataset_id: bytes,
    recipient: int,
    nonce: int,
    sealed: bytes,
    payload: bytes = b"",
) -> bytes:
    """The EIP-712 digest of a `Submission` (`SUBMISSION_TYPES`), encoded by hand: every field
    is one 32-byte word (what a wallet signs for the typed data; a test checks the two agree)."""
    if not (0 <= job_id < 2**256 and 0 <= recipient < 2**8 and 0 <= nonce < 2**256):
        raise WireError("a submission's job, recipient or nonce is out of range")
    if len(dataset_id) != 32:
        raise WireError("a dataset id is 32 bytes")
    struct = b"".join((
        SUBMISSION_TYPEHASH, job_id.to_bytes(32, "big"), bytes(dataset_id),
        recipient.to_bytes(32, "big"), nonce.to_bytes(32, "big"), keccak(sealed),
        payload_hash(payload),
    ))  # fmt: skip
    return domain.digest(keccak(struct))


@dataclass(frozen=True)
class SignedSubmission:
    """The body of `POST /jobs/{job}/submissions`."""

    job_id: int
    dataset_id: bytes
    recipient: int
    nonce: int
    sealed: bytes
    signature: bytes
    participation_bps: int
    """The largest slash, in basis points of its stake, the owner accepts in this job."""
    participation: bytes
    """The owner's EIP-712 `Participation(jobId, datasetId, maxSlashBps)` signature, which the
    committee passes to `finalize` if it slashes the dataset."""
    payload: bytes = b""
    """A valuation job's encrypted scores (the same bytes to every committee member)."""

    @classmethod
    def create(
        cls,
        owner: LocalAccount,
        domain: Domain,
        job_id: int,
        dataset_id: bytes,
        recipient: int,
        nonce: int,
        share: NDArray[np.uint64],
        public_key: bytes,
        max_slash_bps: int = 0,
        payload: bytes = b"",
        seed: bytes | None = None,
    ) -> SignedSubmission:
        sealed = seal(share, public_key, seed)
        digest = submission_digest(domain, job_id, dataset_id, recipient, nonce, sealed, payload)
        signature = sign_digest(owner, digest)
        consent = participation_digest(domain, job_id, dataset_id, max_slash_bps)
        return cls(job_id, dataset_id, recipient, nonce, sealed, signature, max_slash_bps,
                   sign_digest(owner, consent), payload)  # fmt: skip

    def participation_signer(self, domain: Domain) -> str:
        """The consent's signer, recovered as the contract will when it applies a slash
        (OpenZeppelin's ECDSA: low s, v 27 or 28): a malleated consent would make `finalize`
        revert, so it is refused here."""
        digest = participation_digest(domain, self.job_id, self.dataset_id, self.participation_bps)
        try:
            return recover_strict(digest, self.participation)
        except InvalidSignature as exc:
            raise WireError(f"the participation signature would not pass on chain: {exc}") from None

    def signer(self, domain: Domain) -> str:
        """Who signed the submission (a 65-byte low-s signature, v 27 or 28, as every wallet
        makes)."""
        digest = submission_digest(
            domain, self.job_id, self.dataset_id, self.recipient, self.nonce, self.sealed,
            self.payload,
        )  # fmt: skip
        try:
            return recover_strict(digest, self.signature)
        except InvalidSignature as exc:
            raise WireError(f"the submission's signature is malformed: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "dataset": "0x" + self.dataset_id.hex(),
            "recipient": self.recipient,
            "nonce": self.nonce,
            "sealed": base64.b64encode(self.sealed).decode(),
            "signature": "0x" + self.signature.hex(),
            "participation_bps": self.participation_bps,
            "participation": "0x" + self.participation.hex(),
        } | ({"payload": base64.b64encode(self.payload).decode()} if self.payload else {})


def node_endpoint(raw: str) -> str:
    """A heavy node's registered endpoint as the nodes post to it: `http(s)://host[:port]`,
    without a trailing slash. Anything else (another scheme, credentials, a path, a query or a
    fragment, with which a member could aim its peers' POSTs at another service's API) raises
    `WireError`."""
    try:
        parts = urllib.parse.urlsplit(raw)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as exc:
        raise WireError(f"endpoint {raw!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WireError(f"endpoint {raw!r} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise WireError(f"endpoint {raw!r} carries credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise WireError(f"endpoint {raw!r} has a path, query or fragment: give scheme://host:port")
    return f"{parts.scheme}://{parts.netloc}"


def refusal_detail(response: Any) -> str:
    """The reason in a node's 4xx answer (`{"detail": ...}`), or the start of its body."""
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]


# ----------------------------------------------------------------------------- peers
_STATISTIC_KINDS = ("statistic", "blends")
"""An ensemble round's `Statistic` by stage: the models' statistics, the blends'."""


def peer_payload(message: Agreement | Statistic | Partial) -> dict[str, Any]:
    if isinstance(message, Agreement):
        return {
            "kind": "agreement",
            "job": message.job_id,
            "sender": message.sender,
            "recipient": message.recipient,
            "datasets": sorted(message.dataset_ids),
            "noise_share": (
                encode_vector(message.noise_share) if message.noise_share is not None else None
            ),
            "mask_share": (
                encode_vector(message.mask_share) if message.mask_share is not None else None
            ),
        }
    if isinstance(message, Statistic):
        # Its own kind per stage: a node keeps one message of each kind from each sender.
        return {
            "kind": _STATISTIC_KINDS[message.stage],
            "job": message.job_id,
            "sender": message.sender,
            "recipient": message.recipient,
            "participants": list(message.participants),
            "value": encode_vector(message.value),
        }
    return {
        "kind": "partial",
        "job": message.job_id,
        "sender": message.sender,
        "recipient": message.recipient,
        "participants": list(message.participants),
        "noise_from": list(message.noise_from),
        "value": encode_vector(message.value),
    }


def peer_message(payload: dict[str, Any]) -> Agreement | Statistic | Partial:
    """The round message in a verified peer payload (the round checks the vectors' lengths)."""
    try:
        if payload["kind"] == "agreement":
            noise, masks = payload.get("noise_share"), payload.get("mask_share")
            return Agreement(
                job_id=str(payload["job"]),
                sender=int(payload["sender"]),
                recipient=int(payload["recipient"]),
                dataset_ids=frozenset(str(d) for d in payload["datasets"]),
                noise_share=decode_vector(noise) if noise is not None else None,
                mask_share=decode_vector(masks) if masks is not None else None,
            )
        if payload["kind"] == "partial":
            return Partial(
                job_id=str(payload["job"]),
                sender=int(payload["sender"]),
                recipient=int(payload["recipient"]),
                participants=tuple(str(d) for d in payload["participants"]),
                noise_from=tuple(int(n) for n in payload["noise_from"]),
                value=decode_vector(payload["value"]),
            )
        if payload["kind"] in _STATISTIC_KINDS:
            return Statistic(
                job_id=str(payload["job"]),
                sender=int(payload["sender"]),
                recipient=int(payload["recipient"]),
                participants=tuple(str(d) for d in payload["participants"]),
                value=decode_vector(payload["value"]),
                stage=_STATISTIC_KINDS.index(payload["kind"]),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"malformed peer message: {exc}") from None
    raise WireError(f"unknown peer message kind {payload.get('kind')!r}")


def sign_payload(account: LocalAccount, payload: dict[str, Any]) -> str:
    return (
        "0x" + bytes(account.sign_message(encode_defunct(canonical_json(payload))).signature).hex()
    )


def payload_signer(payload: dict[str, Any], signature: str) -> str:
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
        return to_checksum_address(
            Account.recover_message(encode_defunct(canonical_json(payload)), signature=raw)
        )
    except Exception:
        raise WireError("the peer message's signature is malformed") from None
