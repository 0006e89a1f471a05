"""EIP-712 hashing of the marketplace's typed messages, in pure Python.

The digests equal the contract's `resultDigest`, `abortDigest` and `participationDigest` (checked by
shared test vectors and against eth-account's generic encoder). Signing takes a key-holding
account; nothing here touches a chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import coincurve
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from market.errors import MarketError
from market.escrow.types import Result

DOMAIN_NAME = "DataMarketplace"
DOMAIN_VERSION = "1"

DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
SLASH_TYPE = "Slash(bytes32 datasetId,uint256 amount)"
RESULT_TYPE = (
    "Result(uint256 jobId,bytes32 resultHash,string resultURI,bytes32 payoutRoot,"
    "uint256 payoutTotal,uint256 slashedToPayouts,uint32 participants,Slash[] slashes)"
)
SLASH_TYPEHASH = keccak(text=SLASH_TYPE)
RESULT_TYPEHASH = keccak(text=RESULT_TYPE + SLASH_TYPE)
ABORT_TYPEHASH = keccak(text="Abort(uint256 jobId,string reason)")
PARTICIPATION_TYPEHASH = keccak(
    text="Participation(uint256 jobId,bytes32 datasetId,uint16 maxSlashBps)"
)

EIP712_TYPES: dict[str, list[dict[str, str]]] = {
    "Slash": [{"name": "datasetId", "type": "bytes32"}, {"name": "amount", "type": "uint256"}],
    "Result": [
        {"name": "jobId", "type": "uint256"},
        {"name": "resultHash", "type": "bytes32"},
        {"name": "resultURI", "type": "string"},
        {"name": "payoutRoot", "type": "bytes32"},
        {"name": "payoutTotal", "type": "uint256"},
        {"name": "slashedToPayouts", "type": "uint256"},
        {"name": "participants", "type": "uint32"},
        {"name": "slashes", "type": "Slash[]"},
    ],
    "Abort": [{"name": "jobId", "type": "uint256"}, {"name": "reason", "type": "string"}],
    "Participation": [
        {"name": "jobId", "type": "uint256"},
        {"name": "datasetId", "type": "bytes32"},
        {"name": "maxSlashBps", "type": "uint16"},
    ],
}
"""The same types in the JSON form wallets and eth-account's `encode_typed_data` take."""


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain of one marketplace deployment."""

    chain_id: int
    verifying_contract: str

    @cached_property
    def separator(self) -> bytes:
        return keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    DOMAIN_TYPEHASH,
                    keccak(text=DOMAIN_NAME),
                    keccak(text=DOMAIN_VERSION),
                    self.chain_id,
                    to_checksum_address(self.verifying_contract),
                ],
            )
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }

    def digest(self, struct_hash: bytes) -> bytes:
        return keccak(b"\x19\x01" + self.separator + struct_hash)


def result_struct_hash(result: Result) -> bytes:
    slash_hashes = b"".join(
        keccak(encode(["bytes32", "bytes32", "uint256"], [SLASH_TYPEHASH, s.dataset_id, s.amount]))
        for s in result.slashes
    )
    return keccak(
        encode(
            [
                "bytes32",
                "uint256",
                "bytes32",
                "bytes32",
                "bytes32",
                "uint256",
                "uint256",
                "uint32",
                "bytes32",
            ],
            [
                RESULT_TYPEHASH,
                result.job_id,
                result.result_hash,
                keccak(text=result.result_uri),
                result.payout_root,
                result.payout_total,
                result.slashed_to_payouts,
                result.participants,
                keccak(slash_hashes),
            ],
        )  # fmt: skip
    )


def result_digest(domain: Domain, result: Result) -> bytes:
    """What each committee member signs to settle a job."""
    return domain.digest(result_struct_hash(result))


def abort_digest(domain: Domain, job_id: int, reason: str) -> bytes:
    """What each committee member signs to abort a job."""
    return domain.digest(
        keccak(
            encode(["bytes32", "uint256", "bytes32"], [ABORT_TYPEHASH, job_id, keccak(text=reason)])
        )
    )


def participation_digest(
    domain: Domain, job_id: int, dataset_id: bytes, max_slash_bps: int
) -> bytes:
    """What a dataset owner signs to join a job, accepting slashes up to `max_slash_bps`."""
    return domain.digest(
        keccak(
            encode(
                ["bytes32", "uint256", "bytes32", "uint16"],
                [PARTICIPATION_TYPEHASH, job_id, dataset_id, max_slash_bps],
            )
        )
    )


def result_message(result: Result) -> dict[str, Any]:
    """`result` as an EIP-712 JSON message (for wallets and eth-account)."""
    return {
        "jobId": result.job_id,
        "resultHash": result.result_hash,
        "resultURI": result.result_uri,
        "payoutRoot": result.payout_root,
        "payoutTotal": result.payout_total,
        "slashedToPayouts": result.slashed_to_payouts,
        "participants": result.participants,
        "slashes": [{"datasetId": s.dataset_id, "amount": s.amount} for s in result.slashes],
    }


def sign_digest(account: LocalAccount, digest: bytes) -> bytes:
    """A 65-byte `r || s || v` signature over an EIP-712 digest: the RFC 6979 signature
    eth-account makes (libsecp256k1 through coincurve: low s, v 27 or 28), several times
    faster."""
    signed = coincurve.PrivateKey(bytes(account.key)).sign_recoverable(digest, hasher=None)
    return signed[:64] + bytes([27 + signed[64]])


def recover(digest: bytes, signature: bytes) -> str:
    """The address that signed `digest`, as eth-account recovers it: lenient, it also takes
    high-s twins and v in {0, 1}, which the contract refuses. Check anything the contract will
    see with `recover_strict`."""
    return str(Account._recover_hash(digest, signature=signature))


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""The order of secp256k1's group."""
MAX_S = SECP256K1_N // 2
"""The largest `s` OpenZeppelin's ECDSA takes (EIP-2: only the low-s one of the two twins)."""


class InvalidSignature(MarketError, ValueError):
    """A signature the contract (OpenZeppelin `ECDSA.tryRecover`) refuses."""


def recover_strict(digest: bytes, signature: bytes) -> str:
    """The signer of `digest` exactly as OpenZeppelin's `ECDSA.tryRecover` finds it: 65 bytes
    `r || s || v`, `s` at most n/2, `v` 27 or 28, and a point ecrecover accepts; anything else
    raises `InvalidSignature` (where the contract would revert `MarketplaceInvalidSignature`)."""
    if len(signature) != 65:
        raise InvalidSignature(f"a signature is 65 bytes, not {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if s > MAX_S:
        raise InvalidSignature("s is in the upper half of the curve order (a high-s twin)")
    if v not in (27, 28):
        raise InvalidSignature(f"v must be 27 or 28, not {v}")
    if not (0 < r < SECP256K1_N and 0 < s):
        raise InvalidSignature("r or s is out of range: ecrecover finds no signer")
    try:
        key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([v - 27]), digest, hasher=None
        )
    except Exception:  # no point on the curve for this r: ecrecover returns address(0)
        raise InvalidSignature("no signer recovers from this signature") from None
    return to_checksum_address(keccak(key.format(compressed=False)[1:])[-20:])
