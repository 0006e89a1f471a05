"""Driving the `market` command as a user would: the installed entry point in a subprocess,
with its own `$MARKET_HOME`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from market.demos.devnet import stop_processes, wait_serving

MARKET = str(Path(sys.executable).with_name("market"))
PASSWORD = "correct horse battery staple"


@dataclass
class Cli:
    home: Path
    network: list[str]
    """Options that select the network under test (`--network embedded|devnet`)."""

    def env(self, **extra: str) -> dict[str, str]:
        own = ("ETH_RPC_URL", "MARKET_ACCOUNT", "MARKET_PASSWORD_FILE")  # not the developer's
        env = {k: v for k, v in os.environ.items() if k not in own}
        env.update(
            MARKET_HOME=str(self.home),
            MARKET_PASSWORD=PASSWORD,
            MARKET_KEYSTORE_SCRYPT_N="1024",  # a fast standard keystore for tests
            COLUMNS="200",
        )
        env.update(extra)
        return env

    def run(self, *args: str, net: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
        command = [MARKET, *args, *(self.network if net else [])]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=300, env=self.env(**env)
        )

    def ok(self, *args: str, net: bool = False, **env: str) -> str:
        proc = self.run(*args, net=net, **env)
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
        return proc.stdout

    def json(self, *args: str, net: bool = False, **env: str) -> object:
        return json.loads(self.ok(*args, "--json", net=net, **env))

    def fails(self, code: int, *args: str, net: bool = False, **env: str) -> str:
        """Run a command that must fail with `code` and one clean line on stderr."""
        proc = self.run(*args, net=net, **env)
        assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, proc.stderr
        return lines[0]


def _committee_nodes(cli: Cli) -> list[Any]:
    """The accounts node0..node2 of `cli`'s wallet, in the contract's (ascending) order."""
    from market.home import Home
    from market.wallet import Wallet

    wallet = Wallet(Home(cli.home).accounts)
    nodes = (wallet.unlock(f"node{i}", PASSWORD) for i in range(3))
    return sorted(nodes, key=lambda a: int(a.address, 16))


@contextmanager
def _escrow(cli: Cli) -> Iterator[Any]:
    from market.escrow import EscrowClient
    from market.home import Home
    from market.network import open_network

    network = "devnet" if "devnet" in cli.network else "embedded"
    with open_network(Home(cli.home), network) as net:
        yield EscrowClient(net.chain, net.deployment)


def accept_as_committee(cli: Cli, job_id: int) -> None:
    """What the drawn heavy nodes node0..node2 do first (without running them): accept."""
    with _escrow(cli) as escrow:
        for node in _committee_nodes(cli):
            if not escrow.job(job_id).has_accepted(node.address):
                escrow.accept_job(node, job_id)


def settle_as_committee(
    cli: Cli, job_id: int, summary: dict[str, Any], payouts: dict[str, int]
) -> None:
    """What the committee's heavy nodes do for a job (without running them): accept it, publish
    the result document with the payout tree by content address, sign the result, and
    finalize with a quorum."""
    from market.escrow import Result
    from market.escrow.documents import ResultDocument
    from market.escrow.eip712 import result_digest, sign_digest
    from market.home import Home
    from market.storage import open_storage, uri_for
    from market.valuation.merkle import PayoutTree

    accept_as_committee(cli, job_id)
    nodes = _committee_nodes(cli)
    with _escrow(cli) as escrow:
        tree = PayoutTree.build(payouts)
        document = ResultDocument(job_id, summary, tree)
        result = Result(
            job_id=job_id,
            result_hash=document.hash,
            result_uri=uri_for(open_storage(Home(cli.home)).put(document.to_bytes())),
            payout_root=tree.root,
            payout_total=tree.total,
            participants=len(summary.get("participants", payouts)),
        )
        digest = result_digest(escrow.domain, result)
        escrow.finalize(nodes[0], result, [sign_digest(n, digest) for n in nodes[:2]])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def heavy_node_processes(cli: Cli, count: int = 3) -> Iterator[list[str]]:
    """`count` heavy nodes registered on the CLI's network (accounts node0.., already funded),
    each a `market node heavy` process; yields their URLs once all serve, stops them after."""
    processes: list[subprocess.Popen] = []
    urls: list[str] = []
    try:
        for i in range(count):
            urls.append(f"http://127.0.0.1:{free_port()}")
            cli.ok("heavy", "register", "--account", f"node{i}", "--stake", "1000",
                   "--endpoint", urls[-1], net=True)  # fmt: skip
            processes.append(
                subprocess.Popen(
                    [MARKET, "node", "heavy", "--account", f"node{i}", "--peer-timeout", "5",
                     *cli.network],
                    env=cli.env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )  # fmt: skip
        wait_serving(urls, processes)
        yield urls
    finally:
        stop_processes(processes)


def wait_for_state(cli: Cli, job: int, state: str, timeout: float) -> dict:
    """`bounty show` of `job` once it reaches `state` (polled each second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = cli.json("bounty", "show", str(job), net=True)
        if shown["state"] == state:
            return shown
        time.sleep(1)
    raise AssertionError(f"job {job} not {state} after {timeout} s: {shown['state']}")


@pytest.fixture
def embedded_cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "home", ["--network", "embedded"])


@pytest.fixture
def devnet_cli(tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(tmp_path / "home", ["--network", "devnet"])
    cli.ok("devnet", "up", "--port", str(free_port()))
    try:
        yield cli
    finally:
        cli.run("devnet", "down")


@pytest.fixture
def hardhat_cli(tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(tmp_path / "home", ["--network", "devnet"])
    cli.ok("devnet", "up", "--hardhat", "--port", str(free_port()))
    try:
        yield cli
    finally:
        cli.run("devnet", "down")


@pytest.fixture(params=["embedded", pytest.param("devnet", marks=pytest.mark.anvil)])
def cli(request: pytest.FixtureRequest) -> Cli:
    """The CLI on the embedded chain and on an Anvil devnet."""
    return request.getfixturevalue(f"{request.param}_cli")


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("devnet", marks=pytest.mark.anvil),
        pytest.param("hardhat", marks=pytest.mark.anvil),
    ]
)
def any_cli(request: pytest.FixtureRequest) -> Cli:
    """The CLI on the embedded chain, on an Anvil devnet, and on a Hardhat 2 devnet."""
    return request.getfixturevalue(f"{request.param}_cli")
