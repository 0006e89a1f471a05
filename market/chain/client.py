"""`Chain`: deploy, call and transact against any backend, with local signing, nonce tracking,
receipts, and reverts turned into the contract's named errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import TxReceipt

from market.chain.artifacts import load_artifact
from market.chain.backends import AnvilBackend, Backend, EmbeddedBackend, RpcBackend
from market.chain.errors import (
    ChainConnectionError,
    ChainError,
    ContractRevert,
    UnknownRevert,
    decode_revert,
    revert_data_from,
)

GAS_MARGIN = 1.25
"""Estimated gas is multiplied by this before sending; receipts report what was really used."""


class TransactionRejected(ChainError):
    """The node refused a transaction before running it (funds, nonce, fees); nothing was sent."""


@dataclass(frozen=True)
class Receipt:
    """A mined, successful transaction."""

    tx_hash: str
    block_number: int
    gas_used: int
    contract_address: str | None
    raw: TxReceipt

    def events(self, contract: Contract, name: str) -> list[dict[str, Any]]:
        """The decoded `name` events that `contract` emitted in this transaction, as dicts."""
        logs = contract.events[name]().process_receipt(self.raw, errors=DISCARD)
        return [dict(log["args"]) for log in logs if log["address"] == contract.address]


_CONNECTION_ERRORS = {"ConnectionError", "ConnectTimeout", "ReadTimeout", "ConnectionRefusedError"}


def _connection_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return bool(
        names & {"ConnectionError", "ConnectTimeout", "ReadTimeout", "ConnectionRefusedError"}
    )


def translate(exc: BaseException) -> ChainError:
    """Maps what web3/eth-tester raised onto this package's errors."""
    if isinstance(exc, ChainError):
        return exc
    data = revert_data_from(exc)
    if data is not None:
        return decode_revert(data)
    if _connection_error(exc):
        return ChainConnectionError(f"the chain stopped answering: {exc}")
    message = str(exc.args[0] if exc.args else exc)
    if isinstance(exc.args[0] if exc.args else None, dict):
        message = exc.args[0].get("message", message)
    return TransactionRejected(f"the node rejected the transaction: {message}")


class Chain:
    """One connection to one chain. Thread-safe for sending from several accounts."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.web3: Web3 = backend.web3
        self.chain_id: int = self.web3.eth.chain_id
        self._nonces: dict[str, int] = {}
        """The next nonce this object hands out per sender (at least the chain's pending count)."""
        self._senders: dict[str, threading.Lock] = {}
        """One lock per sending account: its sends are ordered, other accounts' run alongside."""
        self._senders_lock = threading.Lock()
        self._dry_run_gas: int | None = getattr(backend, "dry_run_gas", None)
        self._call_sender: str | None = getattr(backend, "call_sender", None)
        self._recorders: list[list[Receipt]] = []
        """Lists open in `recording`, each collecting the receipts mined meanwhile."""

    # ----------------------------------------------------------------- constructors
    @classmethod
    def embedded(cls, state: Path | None = None) -> Chain:
        """An in-process py-evm chain: fresh, or kept in the file `state` between runs (saved
        on `close`)."""
        return cls(EmbeddedBackend(state=state))

    @classmethod
    def anvil(cls, **options: Any) -> Chain:
        """A fresh Anvil process on 127.0.0.1 (stopped by `close`)."""
        return cls(AnvilBackend(**options))

    @classmethod
    def rpc(cls, url: str) -> Chain:
        """Any JSON-RPC endpoint."""
        return cls(RpcBackend(url))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- contracts
    def contract(self, artifact: str, address: str) -> Contract:
        """A web3 contract object for the shipped artifact `artifact` at `address`."""
        return self.web3.eth.contract(
            address=Web3.to_checksum_address(address), abi=load_artifact(artifact).abi
        )

    def deploy(self, account: LocalAccount, artifact: str, *args: Any) -> Contract:
        """Deploys the shipped artifact with constructor `args`; returns the contract."""
        spec = load_artifact(artifact)
        factory = self.web3.eth.contract(abi=spec.abi, bytecode=spec.bytecode)
        receipt = self.transact(account, factory.constructor(*args))
        assert receipt.contract_address is not None
        return self.contract(artifact, receipt.contract_address)

    # ----------------------------------------------------------------- reading
    def call(self, fn: ContractFunction, sender: str | None = None, block: str = "latest") -> Any:
        """Runs a view (or dry-runs any function, sending nothing) and returns its decoded
        result; the contract's named error if it reverts. At `block="pending"`, what a
        transaction sent now would see."""
        sender = sender or self._call_sender
        try:
            return fn.call({"from": sender} if sender else {}, block_identifier=block)
        except Exception as exc:
            raise translate(exc) from None

    def events(
        self,
        contract: Contract,
        name: str,
        from_block: int = 0,
        to_block: int | str = "latest",
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Every `name` event of `contract` in blocks `from_block..to_block` whose indexed
        arguments equal `filters`, oldest first, as dicts of their arguments plus
        `blockNumber`."""
        last = self.web3.eth.block_number if to_block == "latest" else int(to_block)
        found: list[dict[str, Any]] = []
        for start, stop in self._log_ranges(from_block, last):
            found.extend(self._logs(contract, name, start, stop, filters))
        return found

    def find_event(
        self,
        contract: Contract,
        name: str,
        from_block: int = 0,
        oldest: bool = False,
        **filters: Any,
    ) -> dict[str, Any] | None:
        """The newest (or, with `oldest`, the oldest) `name` event since `from_block` matching
        `filters`, searching from that end and stopping at the first window that has one."""
        ranges = self._log_ranges(from_block, self.web3.eth.block_number)
        for start, stop in ranges if oldest else reversed(ranges):
            logs = self._logs(contract, name, start, stop, filters)
            if logs:
                return logs[0] if oldest else logs[-1]
        return None

    def raw_logs(
        self, address: str, topics: list[Any], from_block: int, to_block: int
    ) -> list[Any]:
        """The undecoded logs of `address` in blocks `from_block..to_block` whose first topic
        is one of `topics`, in chain order (block, then log index)."""
        found: list[Any] = []
        try:
            for start, stop in self._log_ranges(from_block, to_block):
                found.extend(
                    self.web3.eth.get_logs(
                        {
                            "address": address,
                            "fromBlock": start,
                            "toBlock": stop,
                            "topics": [topics],
                        }  # fmt: skip
                    )
                )
        except Exception as exc:
            raise translate(exc) from None
        return sorted(found, key=lambda log: (log["blockNumber"], log["logIndex"]))

    def first_block_at(self, timestamp: int) -> int:
        """The first block whose timestamp is at least `timestamp` (binary search)."""
        low, high = 0, self.web3.eth.block_number
        while low < high:
            middle = (low + high) // 2
            if int(self.web3.eth.get_block(middle)["timestamp"]) < timestamp:
                low = middle + 1
            else:
                high = middle
        return low

    def _log_ranges(self, first: int, last: int) -> list[tuple[int, int]]:
        # eth-tester filters logs in time superlinear in the range (256 blocks: seconds), so
        # the embedded chain is asked in small windows; real nodes take the range at once.
        step = getattr(self.backend, "log_window", None) or max(1, last - first + 1)
        return [(b, min(b + step - 1, last)) for b in range(first, last + 1, step)]

    def _logs(
        self, contract: Contract, name: str, start: int, stop: int, filters: dict[str, Any]
    ) -> list[dict[str, Any]]:
        try:
            logs = contract.events[name]().get_logs(
                from_block=start, to_block=stop, argument_filters=filters or None
            )
        except Exception as exc:
            raise translate(exc) from None
        return [{**dict(log["args"]), "blockNumber": log["blockNumber"]} for log in logs]

    def balance(self, address: str) -> int:
        """Ether balance in wei."""
        try:
            return self.web3.eth.get_balance(Web3.to_checksum_address(address))
        except Exception as exc:
            raise translate(exc) from None

    def now(self) -> int:
        """The latest block's timestamp: the contract's idea of `block.timestamp`."""
        return int(self.web3.eth.get_block("latest")["timestamp"])

    def clock(self) -> int:
        """Now, as the next block will see it: the wall clock, or the latest block's timestamp
        if the chain is ahead (a devnet whose clock was moved). An idle chain's latest block
        can be minutes old, and its next block takes the wall clock: a deadline or a window
        counted from `now()` would come that much early."""
        return max(self.now(), int(time.time()))

    # ----------------------------------------------------------------- writing
    def transact(
        self, account: LocalAccount, fn: Any, *, value: int = 0, gas: int | None = None
    ) -> Receipt:
        """Signs `fn` (a bound contract function or constructor) with `account`, sends it and
        waits for its receipt. Raises the contract's named error if it reverts; a revert found
        while estimating gas sends nothing and uses no nonce."""
        sender = account.address
        params: dict[str, Any] = {"from": sender, "value": value}
        try:
            if gas is None and self._dry_run_gas:
                # py-evm estimates by binary search (~15 executions); one dry run finds any revert
                # and the receipt still reports the gas really used.
                gas = self._dry_run_gas
                dry = fn.build_transaction({**params, "gas": gas, "nonce": 0})
                call = {k: dry[k] for k in ("from", "to", "data", "value") if k in dry}
                self.web3.eth.call(call, block_identifier="pending")
            elif gas is None:
                # At the pending block: what the transaction will see when mined (a draw
                # needs a block after the posting one).
                gas = int(fn.estimate_gas(params, block_identifier="pending") * GAS_MARGIN)
                gas = min(gas, int(self.web3.eth.get_block("latest")["gasLimit"]))
        except Exception as exc:
            raise translate(exc) from None
        return self._send(
            account, lambda nonce: fn.build_transaction({**params, "gas": gas, "nonce": nonce})
        )

    def send_ether(self, account: LocalAccount, to: str, wei: int) -> Receipt:
        """A plain value transfer."""
        tx = {"to": Web3.to_checksum_address(to), "value": wei, "gas": 21_000,
              "chainId": self.chain_id, **self._fees()}  # fmt: skip
        return self._send(account, lambda nonce: {**tx, "nonce": nonce})

    def fund(self, address: str, wei: int) -> None:
        """Sets `address`'s ether balance on a devnet (for gas)."""
        self.backend.set_balance(Web3.to_checksum_address(address), wei)

    @contextmanager
    def recording(self) -> Iterator[list[Receipt]]:
        """The receipts of the transactions mined through this object while the block runs,
        in order (a command reports their hashes)."""
        receipts: list[Receipt] = []
        self._recorders.append(receipts)
        try:
            yield receipts
        finally:
            self._recorders.remove(receipts)

    def increase_time(self, seconds: int) -> None:
        """Moves a devnet's clock forward by `seconds` and mines a block."""
        self.backend.increase_time(seconds)

    # ----------------------------------------------------------------- internals
    def _fees(self) -> dict[str, int]:
        base = int(self.web3.eth.get_block("latest").get("baseFeePerGas", 0))
        tip = 10**9
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def _send(self, account: LocalAccount, build: Callable[[int], dict[str, Any]]) -> Receipt:
        """Signs and sends `build(nonce)`, waits for the receipt; a failed send uses no nonce."""
        with self._sending(account.address) as nonce:
            try:
                tx = build(nonce)
                tx_hash = self.web3.eth.send_raw_transaction(
                    account.sign_transaction(tx).raw_transaction
                )
            except Exception as exc:
                raise translate(exc) from None
        try:
            raw = self.web3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        except Exception as exc:
            raise translate(exc) from None
        if raw["status"] != 1:
            raise self._replay_failure(tx, raw)
        receipt = Receipt(
            tx_hash="0x" + bytes(raw["transactionHash"]).hex(),
            block_number=raw["blockNumber"],
            gas_used=raw["gasUsed"],
            contract_address=raw.get("contractAddress"),
            raw=raw,
        )
        for receipts in self._recorders:
            receipts.append(receipt)
        return receipt

    @contextmanager
    def _sending(self, sender: str) -> Iterator[int]:
        """Hands out the next nonce for `sender` and consumes it only if the send succeeded.
        One sender's transactions are signed and sent one at a time (so two threads never take
        the same nonce); the chain's pending count is read each time, so an account that also
        sends from elsewhere (another process, a wallet) is not handed a nonce already used."""
        with self._senders_lock:
            lock = self._senders.setdefault(sender, threading.Lock())
        with lock:
            pending = self.web3.eth.get_transaction_count(sender, "pending")  # type: ignore[arg-type]
            nonce = max(pending, self._nonces.get(sender, 0))
            yield nonce
            self._nonces[sender] = nonce + 1

    def _replay_failure(self, tx: dict[str, Any], raw: TxReceipt) -> ContractRevert:
        """The named error a mined transaction reverted with: from the node's trace of it
        (Anvil, Hardhat and most RPC nodes keep one), else by replaying it as a call on the
        state before its block (which misses a revert that depends on the block's time)."""
        data = self._traced_revert(raw["transactionHash"])
        if data:
            return decode_revert(data)
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            self.web3.eth.call(call, block_identifier=raw["blockNumber"] - 1)  # type: ignore[arg-type]
        except Exception as exc:
            error = translate(exc)
            if isinstance(error, ContractRevert):
                return error
        if raw["gasUsed"] >= tx.get("gas", 0) > 0:
            reason = f"the transaction ran out of gas (limit {tx['gas']})"
        else:
            reason = f"transaction failed (gas used {raw['gasUsed']}) and the node keeps no trace"
        return UnknownRevert({"reason": reason})

    def _traced_revert(self, tx_hash: Any) -> bytes | None:
        if self.backend.name == "embedded":
            return None  # eth-tester traces nothing; its calls see the mined block's time
        try:
            trace = self.web3.provider.make_request(
                "debug_traceTransaction",  # type: ignore[arg-type]
                ["0x" + bytes(tx_hash).hex(), {"tracer": "callTracer"}],
            )
            output = trace["result"]["output"]
        except Exception:
            return None
        return bytes.fromhex(output.removeprefix("0x")) if isinstance(output, str) else None
