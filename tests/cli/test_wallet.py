"""`market wallet` through the entry point: keystores interoperate with standard tools."""

from __future__ import annotations

import json
from pathlib import Path

from eth_account import Account

from tests.cli.conftest import PASSWORD, Cli
from tests.wallet.test_keystore import PBKDF2_VECTOR, VECTOR_ADDRESS, VECTOR_KEY


def test_keystore_written_by_the_cli_decrypts_with_eth_account(embedded_cli: Cli):
    address = embedded_cli.json("wallet", "new", "alice")["address"]
    keystore = json.loads(embedded_cli.ok("wallet", "export", "alice"))
    assert keystore["version"] == 3
    key = Account.decrypt(keystore, PASSWORD)
    assert Account.from_key(key).address == address
    on_disk = json.loads((embedded_cli.home / "accounts" / "alice.json").read_text())
    assert on_disk == keystore
    assert embedded_cli.ok("wallet", "address", "alice").strip() == address
    exported = embedded_cli.ok("wallet", "export", "alice", "--private-key").strip()
    assert exported == "0x" + bytes(key).hex()


def test_standard_keystore_from_another_tool_imports(embedded_cli: Cli, tmp_path: Path):
    foreign = tmp_path / "UTC--2016-foreign.json"
    foreign.write_text(PBKDF2_VECTOR)
    line = embedded_cli.fails(
        1, "wallet", "import", "vec", "--keystore", str(foreign), MARKET_PASSWORD="nope"
    )
    assert "wrong password" in line
    assert embedded_cli.json("wallet", "list") == []
    imported = embedded_cli.json(
        "wallet", "import", "vec", "--keystore", str(foreign), MARKET_PASSWORD="testpassword"
    )
    assert imported["address"] == VECTOR_ADDRESS
    exported = embedded_cli.ok(
        "wallet", "export", "vec", "--private-key", MARKET_PASSWORD="testpassword"
    )
    assert exported.strip() == VECTOR_KEY


def test_private_key_import_and_password_file(embedded_cli: Cli, tmp_path: Path):
    account = Account.create()
    key_file = tmp_path / "key"
    key_file.write_text("0x" + bytes(account.key).hex())
    secret = tmp_path / "password"
    secret.write_text("from a file\n")
    imported = embedded_cli.json(
        "wallet", "import", "bob", "--private-key-file", str(key_file),
        "--password-file", str(secret), MARKET_PASSWORD="",
    )  # fmt: skip
    assert imported["address"] == account.address
    keystore = json.loads(embedded_cli.ok("wallet", "export", "bob"))
    assert Account.decrypt(keystore, "from a file") == account.key


def test_wallet_errors_are_one_line(embedded_cli: Cli):
    embedded_cli.ok("wallet", "new", "carol")
    assert "already" in embedded_cli.fails(1, "wallet", "new", "carol")
    assert "nobody" in embedded_cli.fails(1, "wallet", "address", "nobody")
    assert "alias" in embedded_cli.fails(1, "wallet", "new", "bad/alias")
    line = embedded_cli.fails(1, "wallet", "new", "dave", MARKET_PASSWORD="")
    assert "--password-file" in line
    assert [a["alias"] for a in embedded_cli.json("wallet", "list")] == ["carol"]
