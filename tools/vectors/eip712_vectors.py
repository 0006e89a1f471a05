"""Writes tests/vectors/eip712.json: EIP-712 digests of the marketplace's typed messages, computed
with eth-account's generic typed-data encoder (an implementation independent of
market.escrow.eip712). The contract is checked against the same file in tests/escrow.

    .venv/bin/python tools/vectors/eip712_vectors.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "vectors" / "eip712.json"
DEPLOYER_KEY = keccak(text="data-market eip712 vector deployer")
"""The marketplace is deployed by this key at nonce 1 (the token at nonce 0)."""
CHAIN_ID = 31337


def _types() -> dict:
    sys.path.insert(0, str(ROOT))
    from market.escrow.eip712 import EIP712_TYPES  # the type strings only

    return EIP712_TYPES


def _marketplace_address() -> str:
    import rlp
    from eth_utils import to_checksum_address

    deployer = Account.from_key(DEPLOYER_KEY).address
    return to_checksum_address(keccak(rlp.encode([bytes.fromhex(deployer[2:]), 1]))[12:])


def _digest(domain: dict, primary: str, message: dict) -> str:
    wanted = {"Result": ("Result", "Slash")}.get(primary, (primary,))
    types = {k: v for k, v in _types().items() if k in wanted}
    full = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            **types,
        },
        "primaryType": primary,
        "domain": domain,
        "message": message,
    }
    signable = encode_typed_data(full_message=full)
    return "0x" + keccak(b"\x19" + signable.version + signable.header + signable.body).hex()


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def build() -> dict:
    domain = {
        "name": "DataMarketplace",
        "version": "1",
        "chainId": CHAIN_ID,
        "verifyingContract": _marketplace_address(),
    }
    h = lambda label: keccak(text=label)  # noqa: E731
    results = [
        {"jobId": 1, "resultHash": h("r1"), "resultURI": "", "payoutRoot": bytes(32),
         "payoutTotal": 0, "slashedToPayouts": 0, "participants": 1, "slashes": []},
        {"jobId": 7, "resultHash": h("r7"), "resultURI": "ipfs://bafyresult", "payoutRoot": h("root"),
         "payoutTotal": 123 * 10**18 + 1, "slashedToPayouts": 5, "participants": 1000,
         "slashes": [{"datasetId": h("a"), "amount": 5}, {"datasetId": h("b"), "amount": 2**255}]},
        {"jobId": 2**256 - 1, "resultHash": h("max"), "resultURI": "ünïcode ✓", "payoutRoot": h("r"),
         "payoutTotal": 2**256 - 1, "slashedToPayouts": 0, "participants": 2**32 - 1,
         "slashes": sorted(({"datasetId": h(f"d{i}"), "amount": i} for i in range(3)),
                           key=lambda s: s["datasetId"])},
    ]  # fmt: skip
    participations = [
        {"jobId": 1, "datasetId": h("dataset"), "maxSlashBps": 0},
        {"jobId": 42, "datasetId": h("dataset-2"), "maxSlashBps": 10_000},
        {"jobId": 3, "datasetId": bytes(32), "maxSlashBps": 65_535},
    ]
    aborts = [{"jobId": 1, "reason": ""}, {"jobId": 9, "reason": "3 of 50 participants"}]

    def encode_message(message: dict) -> dict:
        out = {}
        for key, value in message.items():
            if isinstance(value, bytes):
                out[key] = _hex(value)
            elif isinstance(value, list):
                out[key] = [encode_message(v) for v in value]
            elif isinstance(value, int) and value >= 2**53:
                out[key] = str(value)
            else:
                out[key] = value
        return out

    return {
        "description": "EIP-712 digests for the Marketplace's Result, Participation and Abort "
        "messages, computed with eth-account's generic encoder. Integers >= 2^53 are decimal "
        "strings; bytes are 0x-hex.",
        "generator": "tools/vectors/eip712_vectors.py",
        "domain": domain,
        "deployerKey": _hex(DEPLOYER_KEY),
        "result": [
            {"message": encode_message(m), "digest": _digest(domain, "Result", m)} for m in results
        ],
        "participation": [
            {"message": encode_message(m), "digest": _digest(domain, "Participation", m)}
            for m in participations
        ],
        "abort": [
            {"message": encode_message(m), "digest": _digest(domain, "Abort", m)} for m in aborts
        ],
    }


if __name__ == "__main__":
    text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT} is stale: run python {Path(__file__).relative_to(ROOT)}")
        print("eip712 vectors are up to date")
    else:
        OUT.write_text(text)
        print(f"wrote {OUT.relative_to(ROOT)}")
