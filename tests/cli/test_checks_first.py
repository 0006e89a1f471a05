"""Every check before any transaction: a command that fails leaves no approval, allowance or
partial state behind (the account sent nothing)."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Cli

TOKEN = 10**18


def _sent_and_allowance(cli: Cli, alias: str) -> tuple[int, int]:
    """How many transactions `alias` sent, and what the marketplace may spend of its DATA."""
    from market.chain.token import TokenClient
    from market.home import Home
    from market.network import open_network
    from market.wallet import Wallet

    address = Wallet(Home(cli.home).accounts).address(alias)
    with open_network(Home(cli.home), "embedded") as net:
        token = TokenClient(net.chain, net.deployment.token)
        sent = net.chain.web3.eth.get_transaction_count(address)
        return sent, token.allowance(address, net.deployment.marketplace)


def test_failing_registrations_and_stakes_send_nothing(embedded_cli: Cli, tmp_path: Path):
    cli = embedded_cli
    for who in ("node0", "p0"):
        cli.ok("wallet", "new", who)
        cli.ok("faucet", "--account", who, "--amount", "5000", net=True)
    cli.ok("wallet", "new", "p1")
    register = ("heavy", "register", "--account", "node0", "--endpoint",
                "http://127.0.0.1:18540", "--stake", "1000")  # fmt: skip
    cli.ok(*register, net=True)
    before = _sent_and_allowance(cli, "node0")
    line = cli.fails(1, *register, net=True)
    assert "already a registered heavy node" in line
    assert _sent_and_allowance(cli, "node0") == before
    assert before[1] == 0

    table = tmp_path / "p0.csv"
    table.write_text("age,bp\n34,120\n51,131\n47,128\n")
    cli.ok("dataset", "register", str(table), "--name", "p0")
    cli.ok("dataset", "stake", "p0", "--amount", "50", "--account", "p0", net=True)
    before = _sent_and_allowance(cli, "p1")
    line = cli.fails(1, "dataset", "stake", "p0", "--amount", "50", "--account", "p1", net=True)
    assert "already staked" in line
    assert _sent_and_allowance(cli, "p1") == before == (0, 0)

    # The deadline is checked before anything else (`--no-permit`'s approval included).
    cli.ok("wallet", "new", "buyer")
    spec = tmp_path / "spec.json"
    spec.write_text(cli.ok("bounty", "template", "--column", "bp", "--op", "mean",
                           "--lo", "0", "--hi", "250"))  # fmt: skip
    before = _sent_and_allowance(cli, "buyer")
    line = cli.fails(1, "bounty", "post", str(spec), "--budget", "50", "--deadline", "9d",
                     "--no-permit", "--account", "buyer", net=True)  # fmt: skip
    assert "maximum job window of 7 days" in line and "UTC" in line
    assert _sent_and_allowance(cli, "buyer") == before == (0, 0)
