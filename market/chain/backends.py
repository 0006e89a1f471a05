"""Three ways to reach a chain: embedded py-evm, an Anvil devnet process, or any RPC URL.

A backend owns the connection (and, for Anvil, the process). Everything above it talks to a
`web3.Web3` instance; the devnet-only powers (minting ether, moving the clock) live here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from web3 import EthereumTesterProvider, Web3
from web3.providers.rpc import HTTPProvider

from market.chain.errors import ChainConnectionError, ChainError, DevnetError

ANVIL_ENV = "MARKET_ANVIL_BIN"
ANVIL_HISTORY = ("--prune-history", "256")
"""Anvil keeps the state of the last 256 blocks in memory and writes none to disk. By default
it spills every older block's state into ~/.foundry/anvil/tmp/ (about 2 MB a block for the
market's contracts) and leaves the files behind when it is stopped: one test run wrote 3.2 GB
there, and the disk filled. Calls against a block older than that answer BlockOutOfRangeError;
blocks, receipts and logs stay."""
_LISTENING = re.compile(rb"Listening on (127\.0\.0\.1|localhost):(\d+)")


class Backend(Protocol):
    """What `Chain` needs from a backend."""

    name: str
    web3: Web3

    @property
    def is_devnet(self) -> bool:
        """Whether `set_balance` and `increase_time` work."""
        ...

    def set_balance(self, address: str, wei: int) -> None:
        """Gives `address` exactly `wei` ether (devnets only)."""
        ...

    def increase_time(self, seconds: int) -> None:
        """Moves the chain clock forward and mines a block (devnets only)."""
        ...

    def close(self) -> None:
        """Releases the connection and stops any process the backend started."""
        ...


_TIMED = frozenset({"eth_sendRawTransaction", "eth_sendTransaction", "eth_call", "eth_estimateGas"})
"""Requests that run at the pending block, whose timestamp must be the wall clock's."""


class _LockedTesterProvider(EthereumTesterProvider):
    """py-evm is not thread-safe: one request at a time (nodes in threads share a chain)."""

    def __init__(self, tester: Any) -> None:
        super().__init__(tester)
        self._request_lock = threading.RLock()

    def make_request(self, method: Any, params: Any) -> Any:
        with self._request_lock:
            if method in _TIMED:
                self._catch_up()
            return super().make_request(method, params)

    def _catch_up(self) -> None:
        """Brings the pending block's timestamp up to the wall clock, as a real chain's next
        block has it (py-evm stamps a pending block when the one before it is mined, so after
        an idle minute a transaction would be mined a minute in the past)."""
        chain = self.ethereum_tester.backend.chain
        now = int(time.time())
        if chain.header.timestamp < now:
            chain.header = chain.header.copy(timestamp=now)


class EmbeddedBackend:
    """py-evm in this process through eth-tester: no other process, the default network."""

    name = "embedded"
    is_devnet = True
    dry_run_gas = 20_000_000
    """Gas limit sent with every transaction instead of a (slow, binary-search) estimate."""
    log_window = 16
    """Blocks per log query (eth-tester's log filter slows down sharply with wider ranges)."""

    def __init__(self, gas_limit: int = 60_000_000, state: Path | None = None) -> None:
        """A fresh chain; with `state`, the chain saved in that file (if any), saved back there
        on `close`. The file is locked while open, so two commands never interleave."""
        from eth_tester import EthereumTester, PyEVMBackend

        genesis = PyEVMBackend.generate_genesis_params(overrides={"gas_limit": gas_limit})
        pyevm = PyEVMBackend(genesis_parameters=genesis)
        self._state = state
        self._state_lock: int | None = None
        if state is not None:
            self._state_lock = _lock_file(state.with_name(state.name + ".lock"))
            if state.exists():
                pyevm.chain = type(pyevm.chain)(_load_state(state))
        self._tester = EthereumTester(pyevm)
        provider = _LockedTesterProvider(self._tester)
        self.web3 = Web3(provider)
        # web3's request validation asks eth-tester for the chain id on every call (a third of
        # a call's cost here); `Chain` signs every transaction with the chain's own id.
        self.web3.middleware_onion.remove("validation")
        self._faucet = self._tester.get_accounts()[0]
        self.call_sender = self._faucet
        """The `from` of calls that name none (eth-tester otherwise lists its accounts for
        one on every call)."""
        self._lock = provider._request_lock
        """The provider's own lock: a devnet power (a faucet transfer, a clock move) touches
        the chain between two requests, never during one (a call made while the faucet
        sends saw the faucet's nonce change under it: "Invalid transaction nonce")."""

    def set_balance(self, address: str, wei: int) -> None:
        with self._lock:
            current = self.web3.eth.get_balance(address)  # type: ignore[arg-type]
            if wei < current:
                raise ChainError("the embedded chain can only raise balances")
            if wei > current:
                self._tester.send_transaction(
                    {
                        "from": self._faucet,
                        "to": address,
                        "value": wei - current,
                        "gas": 21_000,
                        "max_fee_per_gas": 10**11,
                        "max_priority_fee_per_gas": 10**9,
                    }
                )

    def increase_time(self, seconds: int) -> None:
        with self._lock:
            latest = self.web3.eth.get_block("latest")["timestamp"]
            pending = self._tester.backend.chain.header.timestamp
            target = max(latest, int(time.time())) + max(1, seconds)
            self._tester.time_travel(max(target, pending + 1))
            self._tester.mine_blocks(1)  # so that `latest` (what calls see) has the new time

    def close(self) -> None:
        if self._state is not None and self._state_lock is not None:
            db = self._tester.backend.chain.chaindb.db
            _save_state(self._state, db.wrapped_db.kv_store)
            os.close(self._state_lock)  # releases the lock
            self._state_lock = None


_STATE_MAGIC = b"market-embedded-chain/1\n"


def _lock_file(path: Path) -> int:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ChainError(
            f"the embedded chain in {path.parent} is in use by another `market` command; "
            "wait for it to finish"
        ) from None
    return fd


def _load_state(path: Path) -> object:
    """py-evm's database from a state file: the raw key/value store of every block so far."""
    from eth.db.atomic import AtomicDB
    from eth.db.backends.memory import MemoryDB

    raw = path.read_bytes()
    if not raw.startswith(_STATE_MAGIC):
        raise ChainError(f"{path} is not an embedded chain state file; move it away to start over")
    kv: dict[bytes, bytes] = {}
    view, at = memoryview(raw), len(_STATE_MAGIC)
    try:
        while at < len(raw):
            k, v = (
                int.from_bytes(view[at : at + 4], "big"),
                int.from_bytes(view[at + 4 : at + 8], "big"),
            )
            at += 8
            kv[bytes(view[at : at + k])] = bytes(view[at + k : at + k + v])
            at += k + v
    except (IndexError, ValueError):
        raise ChainError(f"{path} is truncated; move it away to start over") from None
    if at != len(raw):
        raise ChainError(f"{path} is truncated; move it away to start over")
    return AtomicDB(MemoryDB(kv))


def _save_state(path: Path, kv: dict[bytes, bytes]) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_STATE_MAGIC)
            for key, value in kv.items():
                f.write(len(key).to_bytes(4, "big") + len(value).to_bytes(4, "big") + key + value)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RpcBackend:
    """Any EVM JSON-RPC endpoint (`--rpc-url` / `ETH_RPC_URL`)."""

    name = "rpc"

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.web3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))
        try:
            self.web3.eth.chain_id  # noqa: B018  (a request that fails fast on a dead endpoint)
        except Exception as exc:
            raise ChainConnectionError(
                f"no EVM node answers at {url} ({type(exc).__name__}); check the URL or start a "
                "devnet with `market devnet up`"
            ) from exc
        client = self.web3.client_version.lower()
        self.is_devnet = client.startswith(("anvil", "hardhat"))
        self._method_prefix = "hardhat" if client.startswith("hardhat") else "anvil"

    def set_balance(self, address: str, wei: int) -> None:
        if not self.is_devnet:
            raise ChainError(f"{self.url} is not a devnet; fund accounts from a real wallet")
        self.web3.provider.make_request(
            f"{self._method_prefix}_setBalance",
            [address, hex(wei)],  # type: ignore[arg-type]
        )

    def increase_time(self, seconds: int) -> None:
        if not self.is_devnet:
            raise ChainError(f"{self.url} is not a devnet; its clock cannot be moved")
        self.web3.provider.make_request("evm_increaseTime", [max(1, seconds)])  # type: ignore[arg-type]
        self.web3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def close(self) -> None:
        pass


def find_anvil() -> Path:
    """The Anvil binary: `$MARKET_ANVIL_BIN`, this checkout's npm package, or `anvil` on PATH."""
    override = os.environ.get(ANVIL_ENV)
    if override:
        return Path(override)
    root = Path(__file__).resolve().parents[2]
    for candidate in (
        root / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil",
        root / "node_modules" / ".bin" / "anvil",
    ):
        if candidate.exists():
            return candidate
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise DevnetError(
        "Anvil not found: run `make install` in the project (it ships in @foundry-rs/anvil) "
        f"or set {ANVIL_ENV}"
    )


class AnvilBackend(RpcBackend):
    """An Anvil process on 127.0.0.1 that this backend starts and stops."""

    name = "anvil"

    def __init__(
        self,
        port: int = 0,
        chain_id: int = 31337,
        hardfork: str = "cancun",
        startup_timeout: float = 60.0,
        binary: Path | None = None,
    ) -> None:
        command = [
            str(binary or find_anvil()),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--chain-id", str(chain_id),
            "--hardfork", hardfork,
            "--gas-limit", "60000000",
            "--accounts", "1",
            *ANVIL_HISTORY,
        ]  # fmt: skip
        try:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            raise DevnetError(f"cannot start Anvil ({command[0]}): {exc}") from exc
        self.port = self._wait_for_port(startup_timeout)
        # Drain the log so a chatty Anvil never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        super().__init__(f"http://127.0.0.1:{self.port}")

    def _wait_for_port(self, timeout: float) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            seen += line
            match = _LISTENING.search(line)
            if match:
                return int(match.group(2))
        self.close()
        raise DevnetError(f"Anvil did not start: {seen.decode(errors='replace')[-500:]}")

    def _drain(self) -> None:
        stream = self.process.stdout
        while stream is not None and stream.readline():
            pass

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
