"""The contract tests' market: `market.sandbox.Sandbox` under its test name, and the few chain
powers the adversarial tests need beyond it (several transactions in one block, many blocks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount

from market.chain import Chain
from market.chain.client import translate
from market.sandbox import Sandbox as World

__all__ = ["FeeSplit", "World", "call_at", "fee_split", "mine_blocks", "same_block"]


@dataclass(frozen=True)
class FeeSplit:
    """What `finalize` does with the fee: one equal share per member that accepted the job, the
    rounding remainder back to the buyer."""

    fee: int
    each: int
    remainder: int


def fee_split(budget: int, fee_bps: int, accepted: int) -> FeeSplit:
    fee = budget * fee_bps // 10_000
    return FeeSplit(fee, fee // accepted, fee % accepted)


def same_block(chain: Chain, calls: Sequence[tuple[LocalAccount, Any]]) -> list[dict[str, Any]]:
    """Sends `(account, contract function)` transactions (one per sender) so that they are mined
    in one block, in this order, and returns their raw receipts (reverted ones with `status` 0)."""
    w3, backend = chain.web3, chain.backend
    embedded = backend.name == "embedded"
    if embedded:
        backend._tester.disable_auto_mine_transactions()
    else:
        w3.provider.make_request("evm_setAutomine", [False])
    try:
        hashes = []
        senders = [account.address for account, _ in calls]
        # eth-tester checks each queued transaction's nonce against the mined state.
        assert len(set(senders)) == len(senders), "one transaction per sender"
        for account, fn in calls:
            nonce = w3.eth.get_transaction_count(account.address, "pending")
            tx = fn.build_transaction(
                {"from": account.address, "nonce": nonce, "gas": 3_000_000, **chain._fees()}
            )
            hashes.append(w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
        if embedded:
            backend._tester.mine_blocks(1)
        else:
            w3.provider.make_request("evm_mine", [])
    finally:
        if embedded:
            backend._tester.enable_auto_mine_transactions()
        else:
            w3.provider.make_request("evm_setAutomine", [True])
    return [dict(w3.eth.get_transaction_receipt(h)) for h in hashes]


def mine_blocks(chain: Chain, count: int) -> None:
    """Mines `count` empty blocks (a devnet power)."""
    if chain.backend.name == "embedded":
        chain.backend._tester.mine_blocks(count)
    else:
        chain.web3.provider.make_request("anvil_mine", [hex(count)])


def call_at(chain: Chain, fn: Any, sender: str, block: int) -> Any:
    """Runs `fn` as `sender` on the state, and in the context, of block `block`: what a
    transaction at the end of that block would have seen. Raises the contract's named error."""
    try:
        return fn.call({"from": sender}, block_identifier=block)
    except Exception as exc:
        raise translate(exc) from None
