"""The three roles through the real `market` entry point, on the embedded chain and on an Anvil
devnet: wallets, faucet, a heavy-node committee, a staked dataset, a bounty that settles, a
claim, and the balances that must follow."""

from __future__ import annotations

from pathlib import Path

from market.chain import TOKEN
from tests.cli.conftest import Cli, settle_as_committee


def _sent_and_allowance(cli: Cli, address: str) -> tuple[int, int]:
    """How many transactions `address` sent, and what the marketplace may spend of its DATA."""
    from market.chain.token import TokenClient
    from market.home import Home
    from market.network import open_network

    network = "devnet" if "devnet" in cli.network else "embedded"
    with open_network(Home(cli.home), network) as net:
        token = TokenClient(net.chain, net.deployment.token)
        sent = net.chain.web3.eth.get_transaction_count(address)
        return sent, token.allowance(address, net.deployment.marketplace)


def test_three_roles_from_wallets_to_claims(any_cli: Cli, tmp_path: Path):
    cli = any_cli
    # Wallets for everyone, funded from the devnet faucet.
    for alias in ("buyer", "provider", "node0", "node1", "node2"):
        created = cli.json("wallet", "new", alias)
        assert created["alias"] == alias and created["address"].startswith("0x")
        funded = cli.json("faucet", "--account", alias, "--amount", "2000", net=True)
        assert funded["tokens"] == 2_000 * TOKEN
    listed = cli.json("wallet", "list")
    assert [a["alias"] for a in listed] == ["buyer", "node0", "node1", "node2", "provider"]
    addresses = {a["alias"]: a["address"] for a in listed}

    # Operators register a committee.
    for i in range(3):
        node = cli.json(
            "heavy", "register", "--endpoint", f"http://127.0.0.1:{9100 + i}",
            "--stake", "1000", "--account", f"node{i}", net=True,
        )  # fmt: skip
        assert node["active"] and node["stake"] == 1_000 * TOKEN
        assert len(bytes.fromhex(node["encryption_key"][2:])) == 32
    assert len(cli.json("heavy", "list", net=True)) == 3
    # Every check before any transaction: registering again sends nothing, approval included.
    before = _sent_and_allowance(cli, addresses["node0"])
    line = cli.fails(1, "heavy", "register", "--endpoint", "http://127.0.0.1:9100", "--stake",
                     "1000", "--account", "node0", net=True)  # fmt: skip
    assert "already a registered heavy node" in line
    assert _sent_and_allowance(cli, addresses["node0"]) == before and before[1] == 0

    # A provider registers and stakes a dataset.
    data = tmp_path / "clinic.csv"
    data.write_text("age,bp,site\n34,120,north\n51,135,south\n47,128,north\n62,141,east\n")
    registered = cli.json("dataset", "register", str(data), "--name", "clinic")
    assert registered["rows"] == 4
    assert [c["name"] for c in registered["schema"]] == ["age", "bp", "site"]
    mock = cli.ok("dataset", "mock", "clinic")
    assert mock.splitlines()[0] == "age,bp,site" and len(mock.splitlines()) == 101
    staked = cli.json(
        "dataset", "stake", "clinic", "--amount", "50", "--account", "provider", net=True
    )
    assert staked["stake"] == 50 * TOKEN
    before = _sent_and_allowance(cli, addresses["buyer"])
    line = cli.fails(1, "dataset", "stake", "clinic", "--amount", "50", "--account", "buyer",
                     net=True)  # fmt: skip
    assert "already staked" in line
    assert _sent_and_allowance(cli, addresses["buyer"]) == before and before[1] == 0

    # The buyer posts a bounty: approve and escrow in one transaction (permit).
    spec = tmp_path / "spec.json"
    spec.write_text(cli.ok("bounty", "template", "--column", "bp", "--lo", "0", "--hi", "250"))
    job = cli.json(
        "bounty", "post", str(spec), "--budget", "500", "--deadline", "2h",
        "--min-participants", "1", "--account", "buyer", net=True,
    )  # fmt: skip
    job_id = job["job"]
    assert job["state"] == "POSTED" and job["budget"] == 500 * TOKEN
    assert len(job["committee"]) == 3
    assert [j["job"] for j in cli.json("bounty", "list", net=True)] == [job_id]
    assert cli.json("bounty", "show", str(job_id), net=True)["buyer"] == addresses["buyer"]

    # The committee settles: 400 to the provider, a 10% fee, the rest back to the buyer.
    settle_as_committee(
        cli, job_id, {"mean": 42.0, "count": 3}, {addresses["provider"]: 400 * TOKEN}
    )
    result = cli.json("bounty", "result", str(job_id), net=True)
    assert result["result"] == {"mean": 42.0, "count": 3}
    # The fee is split among the three members that accepted; its rounding remainder is refunded.
    assert result["fee"] == 50 * TOKEN and result["refund"] == 50 * TOKEN + 50 * TOKEN % 3

    claimed = cli.json("claim", "--account", "provider", net=True)
    assert claimed["claimed"] == [{"job": job_id, "amount": 400 * TOKEN}]
    assert claimed["balance"] == (2_000 - 50 + 400) * TOKEN
    assert cli.json("claim", "--account", "provider", net=True)["claimed"] == []

    # Balances: the buyer paid 450 (less the fee's rounding remainder); the fee is a third per
    # accepted member: the two signers were paid theirs, the third may claim its own (claimFee).
    each = 50 * TOKEN // 3
    paid = (2_000 - 450) * TOKEN + 50 * TOKEN % 3
    assert cli.json("balance", "buyer", net=True)["tokens"] == paid
    fees = {
        i: cli.json("heavy", "status", "--account", f"node{i}", net=True)["fees_earned"]
        for i in range(3)
    }
    assert sorted(fees.values()) == [0, each, each]
    status = cli.json("heavy", "status", "--account", "node0", net=True)
    assert status["jobs"] == [{"job": job_id, "state": "FINALIZED"}]

    # Unstaking starts unbonding; withdrawing too early is refused with the unlock time.
    unbonding = cli.json("dataset", "unstake", "clinic", "--account", "provider", net=True)
    assert unbonding["unlock_at"] > 0
    line = cli.fails(3, "dataset", "withdraw", "clinic", "--account", "provider", net=True)
    assert "MarketplaceStillUnbonding" in line and "withdraw after" in line


def test_bad_input_is_one_line_and_changes_nothing(cli: Cli, tmp_path: Path):
    cli.ok("wallet", "new", "buyer")
    cli.ok("faucet", "--account", "buyer", "--amount", "100", net=True)
    spec = tmp_path / "spec.json"
    spec.write_text(cli.ok("bounty", "template"))
    post = ("bounty", "post", str(spec), "--deadline", "1h")

    line = cli.fails(1, *post, "--budget", "5", "--account", "buyer", net=True,
                     MARKET_PASSWORD="wrong")  # fmt: skip
    assert "wrong password" in line
    line = cli.fails(1, *post, "--budget", "5", "--account", "nobody", net=True)
    assert "nobody" in line and "market wallet" in line
    line = cli.fails(1, *post, "--budget", "500", "--account", "buyer", net=True)
    assert "more than" in line and "faucet" in line
    line = cli.fails(1, "bounty", "show", "99", net=True)
    assert "no job 99" in line
    line = cli.fails(1, "bounty", "post", str(spec), "--deadline", "9d", "--budget", "5",
                     "--no-permit", "--account", "buyer", net=True)  # fmt: skip
    assert "maximum job window of 7 days" in line and "UTC" in line
    line = cli.fails(2, *post, "--budget", "ten", "--account", "buyer", net=True)
    assert "not a token amount" in line
    spec.write_text(spec.read_text().replace('"op": "mean"', '"op": "median"'))
    line = cli.fails(1, *post, "--budget", "5", "--account", "buyer", net=True)
    assert "reduce.op" in line
    spec.write_text(spec.read_text().replace('"op": "median"', '"op": "mean"'))
    line = cli.fails(1, *post, "--budget", "5", "--account", "buyer", net=True)
    assert "drawn from 0 active heavy nodes" in line and "--committee-size" in line
    line = cli.fails(4, "bounty", "list", "--rpc-url", "http://127.0.0.1:9")
    assert "unreachable" in line

    # Nothing was sent: no job, the buyer's tokens untouched.
    assert cli.json("bounty", "list", net=True) == []
    assert cli.json("balance", "buyer", net=True)["tokens"] == 100 * TOKEN


def test_a_buyer_tries_a_proposal_on_mock_data(embedded_cli: Cli, tmp_path: Path):
    data = tmp_path / "clinic.csv"
    data.write_text("age,bp\n34,120\n51,135\n47,128\n62,141\n")
    embedded_cli.ok("dataset", "register", str(data), "--name", "clinic", "--mock-rows", "50",
                    "--bounds", "bp=100:150")  # fmt: skip
    spec = tmp_path / "spec.json"
    spec.write_text(embedded_cli.ok("bounty", "template", "--column", "bp", "--lo", "0",
                                    "--hi", "250"))  # fmt: skip
    tried = embedded_cli.json("bounty", "try", str(spec), "--mock", "clinic")
    assert tried["op"] == "mean" and tried["datasets"][0]["rows_used"] == 50
    assert 100 <= tried["values"][0] <= 150  # mock rows stay within the declared bounds
    spec.write_text(spec.read_text().replace('"bp"', '"pressure"'))
    line = embedded_cli.fails(1, "bounty", "try", str(spec), "--mock", "clinic")
    assert "pressure" in line


def test_parquet_datasets_register_like_csv(embedded_cli: Cli, tmp_path: Path):
    import pandas as pd

    path = tmp_path / "clinic.parquet"
    pd.DataFrame({"bp": [120.0, 135.0, 128.0], "site": ["n", "s", "n"]}).to_parquet(path)
    registered = embedded_cli.json(
        "dataset", "register", str(path), "--name", "pq", "--categories", "site=n,s"
    )
    assert registered["rows"] == 3
    assert [(c["name"], c["kind"]) for c in registered["schema"]] == [
        ("bp", "float"),
        ("site", "category"),
    ]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    assert "cannot read" in embedded_cli.fails(1, "dataset", "register", str(broken))
