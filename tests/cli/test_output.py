"""Output that fits scripts and people: the README's exit codes, `--json` errors on stderr,
transaction hashes in `--json`, dates as dates, no tracebacks, whole addresses in tables, and
a devnet that says what runs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from eth_account.signers.local import LocalAccount
from rich.console import Console

from market.chain import TOKEN, Chain
from market.chain.errors import error_class
from market.cli.common import format_time, out, revert_hint, table
from market.cli.main import main
from market.home import Home
from market.network import Network
from market.sandbox import Sandbox
from market.wallet import Wallet
from tests.cli.conftest import PASSWORD, Cli, free_port

ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


# ------------------------------------------------------------------------- in process
class InProcess:
    """`market` through click's runner (the same `main` the entry point runs), on one
    in-memory embedded chain shared by every invocation: fast, and the test can read the
    chain the commands wrote."""

    def __init__(self, sandbox: Sandbox, home: Path) -> None:
        self.sandbox = sandbox
        self.home = home
        self.accounts: dict[str, LocalAccount] = {}

    def account(self, alias: str, tokens: int = 0) -> LocalAccount:
        account = self.sandbox.account(tokens * TOKEN)
        Wallet(Home(self.home).accounts).import_private_key(alias, account.key.hex(), PASSWORD)
        self.accounts[alias] = account
        return account

    def run(self, *args: str) -> Result:
        return CliRunner(mix_stderr=False).invoke(main, list(args), catch_exceptions=False)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, (args, result.stderr)
        return json.loads(result.stdout)

    def fails(self, code: int, *args: str) -> str:
        result = self.run(*args)
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        return lines[0]

    def sent_by(self, alias: str, hashes: list[str]) -> None:
        """Each of `hashes` is a transaction mined on the chain, successfully, from `alias`."""
        assert hashes and len(set(hashes)) == len(hashes), hashes
        for tx_hash in hashes:
            receipt = self.sandbox.chain.web3.eth.get_transaction_receipt(tx_hash)
            assert receipt["status"] == 1
            assert receipt["from"] == self.accounts[alias].address


@pytest.fixture
def market(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcess]:
    home = tmp_path / "home"
    for name, value in (("MARKET_HOME", str(home)), ("MARKET_PASSWORD", PASSWORD),
                        ("MARKET_KEYSTORE_SCRYPT_N", "1024")):  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("ETH_RPC_URL", "MARKET_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    with Chain.embedded() as chain:
        sandbox = Sandbox.deploy(chain)
        net = Network("embedded", chain, Home(home), Home(home).networks / "embedded.json")
        net.save_deployment(sandbox.deployment)

        @contextmanager
        def this_chain(_home: Home, _name: str, _rpc_url: str | None) -> Iterator[Network]:
            yield net

        monkeypatch.setattr("market.cli.common.open_network", this_chain)
        yield InProcess(sandbox, home)


def _settle(market: InProcess, job_id: int, payouts: dict[str, int]) -> None:
    """What the drawn committee does (without running its nodes): accept, publish the result
    document by content address, sign, finalize."""
    from market.escrow import Result as JobResult
    from market.escrow.documents import ResultDocument
    from market.escrow.eip712 import result_digest, sign_digest
    from market.storage import open_storage, uri_for
    from market.valuation.merkle import PayoutTree

    escrow = market.sandbox.escrow
    nodes = sorted(
        (market.accounts[f"node{i}"] for i in range(3)), key=lambda a: int(a.address, 16)
    )
    for node in nodes:
        escrow.accept_job(node, job_id)
    tree = PayoutTree.build(payouts)
    document = ResultDocument(job_id, {"mean": 1.0, "count": 3}, tree)
    result = JobResult(
        job_id=job_id,
        result_hash=document.hash,
        result_uri=uri_for(open_storage(Home(market.home)).put(document.to_bytes())),
        payout_root=tree.root,
        payout_total=tree.total,
        participants=3,
    )
    digest = result_digest(escrow.domain, result)
    escrow.finalize(nodes[0], result, [sign_digest(n, digest) for n in nodes[:2]])


def test_every_command_that_sends_reports_its_transaction_hashes(
    market: InProcess, tmp_path: Path
) -> None:
    for alias in ("buyer", "provider", "node0", "node1", "node2"):
        market.account(alias, tokens=2_000)
    hashes = market.json("faucet", "--account", "provider", "--amount", "100")["tx_hashes"]
    assert len(hashes) == 1  # the mint (the gas money is a devnet power, no transaction)
    assert market.sandbox.chain.web3.eth.get_transaction_receipt(hashes[0])["status"] == 1

    data = tmp_path / "clinic.csv"
    data.write_text("age,bp\n34,120\n51,135\n47,128\n")
    market.json("dataset", "register", str(data), "--name", "clinic")
    staked = market.json("dataset", "stake", "clinic", "--amount", "50", "--account", "provider")
    market.sent_by("provider", staked["tx_hashes"])
    for i in range(3):
        registered = market.json("heavy", "register", "--account", f"node{i}", "--stake", "1000",
                                 "--endpoint", f"http://127.0.0.1:{9200 + i}")  # fmt: skip
        market.sent_by(f"node{i}", registered["tx_hashes"])

    spec = tmp_path / "spec.json"
    spec.write_text(market.run("bounty", "template").stdout)
    post = ("bounty", "post", str(spec), "--budget", "100", "--deadline", "1h")
    posted = market.json(*post, "--account", "buyer")
    market.sent_by("buyer", posted["tx_hashes"])  # the post, and the committee's draw
    assert len(posted["tx_hashes"]) == 2 and posted["committee"]

    _settle(market, posted["job"], {market.accounts["provider"].address: 50 * TOKEN})
    claimed = market.json("claim", "--account", "provider")
    assert claimed["claimed"] == [{"job": posted["job"], "amount": 50 * TOKEN}]
    market.sent_by("provider", claimed["tx_hashes"])
    assert market.json("claim", "--account", "provider")["tx_hashes"] == []  # nothing sent

    # A job its committee never accepts: cancelled once the acceptance window is over.
    second = market.json(*post, "--account", "buyer")["job"]
    market.sandbox.chain.increase_time(market.sandbox.config.accept_window + 60)
    cancelled = market.json("bounty", "cancel", str(second), "--account", "buyer")
    assert cancelled["state"] == "EXPIRED"
    market.sent_by("buyer", cancelled["tx_hashes"])

    unstaked = market.json("dataset", "unstake", "clinic", "--account", "provider")
    market.sent_by("provider", unstaked["tx_hashes"])
    left = market.json("heavy", "unstake", "--account", "node0")
    market.sent_by("node0", left["tx_hashes"])
    market.sandbox.chain.increase_time(market.sandbox.config.unbonding_period + 1)
    withdrawn = market.json("dataset", "withdraw", "clinic", "--account", "provider")
    assert withdrawn["withdrawn"] == 50 * TOKEN
    market.sent_by("provider", withdrawn["tx_hashes"])
    market.sent_by("node0", market.json("heavy", "withdraw", "--account", "node0")["tx_hashes"])

    # Commands that only read carry no such key.
    assert "tx_hashes" not in market.json("bounty", "show", str(second))


def test_a_rejected_transaction_shows_its_times_as_dates(market: InProcess, tmp_path: Path) -> None:
    market.account("provider", tokens=100)
    data = tmp_path / "clinic.csv"
    data.write_text("age,bp\n34,120\n51,135\n47,128\n")
    market.json("dataset", "register", str(data), "--name", "clinic")
    market.json("dataset", "stake", "clinic", "--amount", "50", "--account", "provider")
    unlock = market.json("dataset", "unstake", "clinic", "--account", "provider")["unlock_at"]

    withdraw = ("dataset", "withdraw", "clinic", "--account", "provider")
    line = market.fails(3, *withdraw)
    assert f"MarketplaceStillUnbonding(unlockAt={unlock} ({format_time(unlock)}))" in line
    # With --json, the same error as one JSON object on stderr, and the same exit code.
    result = market.run(*withdraw, "--json")
    assert result.exit_code == 3 and result.stdout == ""
    error = json.loads(result.stderr)
    assert error == {"error": error["error"], "code": 3}
    assert format_time(unlock) in error["error"] and "\n" not in result.stderr.strip()


def test_the_deadline_hint_gives_the_contracts_maximum_job_window(market: InProcess) -> None:
    """The contract's own revert (a deadline past its window) turns into a hint naming the
    window the contract enforces (7 days by default) and the bounds as dates."""
    sandbox = market.sandbox
    buyer = sandbox.account(100 * TOKEN)
    params = sandbox.params(3, budget=10 * TOKEN, window=30 * 86_400)
    with pytest.raises(error_class("MarketplaceDeadlineOutOfRange")) as raised:
        sandbox.escrow.post_job(buyer, params)
    window = sandbox.config.max_job_window
    assert window == 7 * 86_400
    assert "maximum job window of 7 days" in revert_hint(raised.value)
    latest = raised.value.values["latest"]
    assert f"latest={latest} ({format_time(latest)})" in str(raised.value)
    wider = error_class("MarketplaceDeadlineOutOfRange")({"deadline": 5, "earliest": 11,
                                                          "latest": 10 + 36 * 3600})  # fmt: skip
    assert "window of 1 d 12 h" in revert_hint(wider)


def test_a_heavy_node_on_a_port_in_use_says_so_in_one_line(market: InProcess) -> None:
    market.account("node0", tokens=2_000)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        market.json("heavy", "register", "--account", "node0", "--stake", "1000",
                    "--endpoint", f"http://127.0.0.1:{port}")  # fmt: skip
        line = market.fails(1, "node", "heavy", "--account", "node0")
    assert f"port {port} is already in use" in line and "--port" in line and "--endpoint" in line
    assert not (market.home / "heavy").exists() or not any((market.home / "heavy").iterdir())


# ------------------------------------------------------------------------- subprocess
def test_malformed_values_and_unreachable_networks_exit_as_the_readme_says(
    embedded_cli: Cli,
) -> None:
    """The installed `market`: 2 for a malformed value, 4 for a network that does not answer;
    with --json, the error as one JSON line on stderr."""
    line = embedded_cli.fails(2, "faucet", "--account", "a", "--amount", "-5")
    assert "'-5' is not a token amount" in line
    proc = embedded_cli.run("dataset", "stake", "X", "--amount", "-5", "--account", "a", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert json.loads(proc.stderr) == {
        "error": "amount '-5' is not a token amount; write it like 100 or 12.5",
        "code": 2,
    }
    proc = embedded_cli.run("bounty", "list", "--rpc-url", f"http://127.0.0.1:{free_port()}",
                            "--json")  # fmt: skip
    assert proc.returncode == 4 and json.loads(proc.stderr)["code"] == 4


class _DyingNode(BaseHTTPRequestHandler):
    """A JSON-RPC node that answers who it is and then dies: every other request has its
    connection closed unanswered (a devnet killed in the middle of a command)."""

    chain_id = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answers = {"eth_chainId": hex(self.chain_id), "web3_clientVersion": "anvil/v1.0.0"}
        if request["method"] not in answers:
            self.close_connection = True
            return
        body = json.dumps({"jsonrpc": "2.0", "id": request["id"],
                           "result": answers[request["method"]]}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_node_that_dies_mid_command_exits_4(embedded_cli: Cli) -> None:
    """Connected, then no answer (web3's raw `requests` error while the deployment is looked
    up): exit 4, one line, no traceback."""
    with Chain.embedded() as chain:  # a real deployment record, for the chain id the node gives
        deployment = Sandbox.deploy(chain).deployment
    chain_id = deployment.chain_id
    record = embedded_cli.home / "networks" / f"chain-{chain_id}.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"deployment": deployment.to_dict()}))
    handler = type("Node", (_DyingNode,), {"chain_id": chain_id})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        line = embedded_cli.fails(4, "bounty", "list", "--rpc-url", url)
        assert "network unreachable" in line and url in line
    finally:
        server.shutdown()
        server.server_close()


def test_usage_errors_are_json_with_json(market: InProcess) -> None:
    result = market.run("bounty", "show", "--json")  # click's own: JOB_ID missing
    assert result.exit_code == 2 and json.loads(result.stderr)["code"] == 2
    assert "JOB_ID" in json.loads(result.stderr)["error"]
    result = market.run("bounty", "post", "nowhere.json", "--json")
    assert result.exit_code == 2 and "nowhere.json" in json.loads(result.stderr)["error"]
    result = market.run("bounty", "show")  # without --json: click's usage text, as before
    assert result.exit_code == 2 and "Usage:" in result.stderr
    result = market.run("--no-such-option", "--json")  # an option of `market` itself
    assert result.exit_code == 2 and json.loads(result.stderr)["code"] == 2


def test_tables_never_break_an_address() -> None:
    address, tx = "0x" + "aB" * 20, "0x" + "cd" * 32
    rows = [["node0", address, tx, "a longer note that may wrap between its words"]]
    for terminal in (True, False):  # a narrow terminal, a pipe; configured as `out` is
        console = Console(width=40, force_terminal=terminal, color_system=None, record=True,
                          soft_wrap=out.soft_wrap)  # fmt: skip
        console.print(table("Nodes", ["alias", "address", "transaction", "note"], rows))
        text = console.export_text()
        assert address in text and tx in text, text
    console = Console(width=40, color_system=None, record=True)
    console.print(table("devnet", ["", ""], [["url", "http://127.0.0.1:8545"]]))
    assert "┃" not in console.export_text()  # no empty header row


# ------------------------------------------------------------------------------ anvil
@pytest.mark.anvil
def test_a_devnet_reports_what_runs_and_a_dead_one_exits_4(devnet_cli: Cli) -> None:
    status = devnet_cli.json("devnet", "status")
    port = status["url"].rsplit(":", 1)[1]
    again = devnet_cli.json("devnet", "up", "--port", port)  # exactly what runs: idempotent
    assert (again["url"], again["pid"]) == (status["url"], status["pid"])
    line = devnet_cli.fails(1, "devnet", "up", "--hardhat", "--port", port)
    assert status["url"] in line and "anvil" in line and "market devnet down" in line
    line = devnet_cli.fails(1, "devnet", "up", "--port", str(free_port()))
    assert f"port {port}" in line
    shown = devnet_cli.ok("devnet", "status")
    assert "┃" not in shown and status["marketplace"] in shown

    os.kill(status["pid"], signal.SIGKILL)  # the devnet dies under the user
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(status["pid"]):
        time.sleep(0.05)
    line = devnet_cli.fails(4, "faucet", "--to", "0x" + "11" * 20, "--amount", "1", net=True)
    assert "does not answer" in line
    proc = devnet_cli.run("balance", "0x" + "11" * 20, "--rpc-url", status["url"], "--json")
    assert proc.returncode == 4 and json.loads(proc.stderr)["code"] == 4


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # our grandchild is reaped by init; a zombie child of ours counts as dead
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True
