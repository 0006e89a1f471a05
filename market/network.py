"""Which chain a `market` command talks to, and where the market is deployed on it.

- `embedded` (the default): an in-process py-evm chain kept in `$MARKET_HOME/embedded/chain.db`
  between commands, deployed to on first use. No other process.
- `devnet`: the Anvil (or Hardhat) process `market devnet up` started, deployed to once.
- `--rpc-url URL` (or `ETH_RPC_URL`): any EVM JSON-RPC endpoint, with the deployment recorded
  for its chain id by `market deploy` (or the devnet's, when the URL is the devnet's).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from market.chain import Chain, ChainConnectionError, ChainError, Deployment, DevnetError
from market.chain.backends import ANVIL_HISTORY, find_anvil
from market.chain.deploy import deploy_market
from market.home import Home, read_json, write_json

NETWORKS = ("embedded", "devnet")
RPC_ENV = "ETH_RPC_URL"
DEVNET_PORT = int(os.environ.get("MARKET_DEVNET_PORT", "8545"))
ETHER = 10**18


class NetworkError(ChainError):
    """A network that cannot be used as asked; the message says what to do."""


@dataclass
class Network:
    name: str
    chain: Chain
    home: Home
    record: Path
    """Where this network's deployment is recorded."""

    @property
    def deployment(self) -> Deployment:
        """The market on this network; raises `NetworkError` when there is none."""
        if not self.record.exists():
            raise NetworkError(
                f"no market is deployed on {self.name}: run `market deploy --network ...` "
                "(or `market devnet up` for a local devnet)"
            )
        deployment = Deployment.from_dict(read_json(self.record)["deployment"])
        if deployment.chain_id != self.chain.chain_id or not self.chain.web3.eth.get_code(
            deployment.marketplace  # type: ignore[arg-type]
        ):
            raise NetworkError(
                f"the market recorded for {self.name} ({self.record}) is not on this chain; "
                "the chain was probably reset: run `market deploy` again"
            )
        return deployment

    def save_deployment(self, deployment: Deployment) -> None:
        """Record `deployment`, keeping what else the record holds (a devnet's URL and pid)."""
        existing = read_json(self.record) if self.record.exists() else {}
        write_json(self.record, {**existing, "deployment": deployment.to_dict()})


def _record_for_rpc(home: Home, chain: Chain, url: str) -> tuple[str, Path]:
    devnet = _devnet_record(home)
    if devnet is not None and devnet.get("url") == url.rstrip("/"):
        return "devnet", home.devnet / "devnet.json"
    return f"chain {chain.chain_id} at {url}", home.networks / f"chain-{chain.chain_id}.json"


@contextmanager
def open_network(
    home: Home, network: str = "embedded", rpc_url: str | None = None
) -> Iterator[Network]:
    """Connect to `network` (or `rpc_url`); the embedded chain is deployed to on first use."""
    rpc_url = rpc_url or os.environ.get(RPC_ENV) or None
    if rpc_url:
        chain = Chain.rpc(rpc_url)
        name, record = _record_for_rpc(home, chain, rpc_url)
    elif network == "embedded":
        chain = Chain.embedded(home.embedded_state)
        name, record = "embedded", home.networks / "embedded.json"
    elif network == "devnet":
        info = _devnet_record(home)
        if info is None:
            raise NetworkError("no devnet is running: start one with `market devnet up`")
        try:
            chain = Chain.rpc(info["url"])
        except ChainConnectionError:  # it died: a network that does not answer
            raise ChainConnectionError(
                f"the devnet at {info['url']} does not answer: `market devnet down` then "
                "`market devnet up`"
            ) from None
        name, record = "devnet", home.devnet / "devnet.json"
    else:
        raise NetworkError(f"unknown network {network!r}: use one of {', '.join(NETWORKS)}")
    with chain:
        net = Network(name, chain, home, record)
        if name == "embedded" and not record.exists():
            deploy_local(net)
        yield net


def deploy_local(net: Network) -> Deployment:
    """Deploy the market on a devnet chain with a fresh deployer holding the initial supply."""
    deployer = Account.create()
    net.chain.fund(deployer.address, 1_000 * ETHER)
    deployment = deploy_market(net.chain, deployer, faucet=True)
    net.save_deployment(deployment)
    return deployment


def deploy(net: Network, deployer: LocalAccount, faucet: bool) -> Deployment:
    deployment = deploy_market(net.chain, deployer, faucet=faucet)
    net.save_deployment(deployment)
    return deployment


# ----------------------------------------------------------------------------------- devnet
def _devnet_record(home: Home) -> dict | None:
    path = home.root / "devnet" / "devnet.json"
    return read_json(path) if path.exists() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class DevnetStatus:
    running: bool
    url: str | None = None
    pid: int | None = None
    kind: str | None = None
    block: int | None = None
    deployment: Deployment | None = None


def devnet_status(home: Home) -> DevnetStatus:
    info = _devnet_record(home)
    if info is None or not _alive(int(info["pid"])):
        return DevnetStatus(False)
    try:
        chain = Chain.rpc(info["url"])
    except ChainConnectionError:
        return DevnetStatus(False, info["url"], int(info["pid"]), info.get("kind"))
    with chain:
        block = chain.web3.eth.block_number
    deployment = Deployment.from_dict(info["deployment"]) if "deployment" in info else None
    return DevnetStatus(True, info["url"], int(info["pid"]), info.get("kind"), block, deployment)


ROOT = Path(__file__).resolve().parents[1]


def _devnet_command(kind: str, port: int) -> list[str]:
    if kind == "hardhat":
        hardhat = ROOT / "node_modules" / ".bin" / "hardhat"
        if not hardhat.exists():
            raise DevnetError(
                "Hardhat not found: run `make install` in the project (npm hardhat@2)"
            )
        config = ROOT / "tools" / "hardhat.config.cjs"
        return [str(hardhat), "node", "--config", str(config),
                "--hostname", "127.0.0.1", "--port", str(port)]  # fmt: skip
    return [
        str(find_anvil()),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--chain-id", "31337",
        "--hardfork", "cancun",
        "--gas-limit", "60000000",
        *ANVIL_HISTORY,
    ]  # fmt: skip


def devnet_up(
    home: Home, port: int = DEVNET_PORT, timeout: float = 60.0, kind: str = "anvil"
) -> DevnetStatus:
    """Start Anvil (or Hardhat 2) on 127.0.0.1:`port` in the background, deploy the market,
    record both."""
    status = devnet_status(home)
    if status.running:
        return status
    devnet_down(home)  # a stale record of a devnet that died
    log = home.devnet / f"{kind}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            _devnet_command(kind, port),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command
        )
    url = f"http://127.0.0.1:{port}"
    chain = _wait_for_rpc(url, process, log, timeout)
    try:
        write_json(home.devnet / "devnet.json", {"url": url, "pid": process.pid, "kind": kind})
        with chain:
            deploy_local(Network("devnet", chain, home, home.devnet / "devnet.json"))
    except BaseException:
        _stop(process.pid)
        (home.devnet / "devnet.json").unlink(missing_ok=True)
        raise
    return devnet_status(home)


def _wait_for_rpc(url: str, process: subprocess.Popen, log: Path, timeout: float) -> Chain:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-400:]
            raise DevnetError(f"the devnet exited at start (is port in use?): {tail.strip()}")
        try:
            return Chain.rpc(url)
        except ChainConnectionError:
            time.sleep(0.1)
    _stop(process.pid)
    raise DevnetError(f"the devnet did not answer at {url} within {timeout:.0f} s; see {log}")


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not _alive(pid):
            return
        try:  # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def devnet_down(home: Home) -> bool:
    """Stop the recorded devnet; returns whether one was running."""
    info = _devnet_record(home)
    if info is None:
        return False
    running = _alive(int(info["pid"]))
    if running:
        _stop(int(info["pid"]))
    (home.devnet / "devnet.json").unlink(missing_ok=True)
    return running
