"""Keystores: round trips, interoperability with other tools' v3 files, and every error."""

from __future__ import annotations

import copy
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import eth_keyfile
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from market.wallet import (
    PASSWORD_ENV,
    SCRYPT_N_ENV,
    AliasExists,
    InvalidAlias,
    InvalidKeystore,
    InvalidPrivateKey,
    UnknownAlias,
    Wallet,
    WalletError,
    WrongPassword,
    resolve_password,
    scrypt_n_from_env,
)
from market.wallet import keystore as keystore_module

FAST_N = 2**12
PASSWORD = "correct horse battery staple"

# The two test vectors of the Web3 Secret Storage Definition (Ethereum wiki), byte for byte:
# password "testpassword", no `address` field. Note the scrypt vector's r=1, p=8.
VECTOR_PASSWORD = "testpassword"
VECTOR_KEY = "0x7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d"
VECTOR_ADDRESS = "0x008AeEda4D805471dF9b2A5B0f38A0C3bCBA786b"
PBKDF2_VECTOR = """{
    "crypto" : {
        "cipher" : "aes-128-ctr",
        "cipherparams" : {
            "iv" : "6087dab2f9fdbbfaddc31a909735c1e6"
        },
        "ciphertext" : "5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46",
        "kdf" : "pbkdf2",
        "kdfparams" : {
            "c" : 262144,
            "dklen" : 32,
            "prf" : "hmac-sha256",
            "salt" : "ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"
        },
        "mac" : "517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"
    },
    "id" : "3198bc9c-6672-5ab3-d995-4942343ae5b6",
    "version" : 3
}"""
SCRYPT_VECTOR = """{
    "crypto" : {
        "cipher" : "aes-128-ctr",
        "cipherparams" : {
            "iv" : "83dbcc02d8ccb40e466191a123791e0e"
        },
        "ciphertext" : "d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c",
        "kdf" : "scrypt",
        "kdfparams" : {
            "dklen" : 32,
            "n" : 262144,
            "r" : 1,
            "p" : 8,
            "salt" : "ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19"
        },
        "mac" : "2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097"
    },
    "id" : "3198bc9c-6672-5ab3-d995-4942343ae5b6",
    "version" : 3
}"""

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv(SCRYPT_N_ENV, raising=False)


@pytest.fixture
def accounts(tmp_path: Path) -> Path:
    return tmp_path / "home" / "accounts"


@pytest.fixture
def wallet(accounts: Path) -> Wallet:
    return Wallet(accounts, scrypt_n=FAST_N)


def snapshot(directory: Path) -> dict[str, bytes] | None:
    """Every file under `directory` with its bytes (None if it does not exist)."""
    if not directory.exists():
        return None
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")}


def foreign_keystore(key: str, password: str, kdf: str = "scrypt") -> dict[str, Any]:
    """A v3 keystore written by another implementation (the standalone eth-keyfile)."""
    work = FAST_N if kdf == "scrypt" else 1000
    return eth_keyfile.create_keyfile_json(
        bytes.fromhex(key.removeprefix("0x")), password.encode(), kdf=kdf, iterations=work
    )


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------------------- round trips
def test_new_unlock_sign(wallet: Wallet) -> None:
    address = wallet.new("alice", PASSWORD)
    assert address == Account.from_key(wallet.export_private_key("alice", PASSWORD)).address
    account = wallet.unlock("alice", PASSWORD)
    assert account.address == address
    message = encode_defunct(text="hello market")
    signed = account.sign_message(message)
    assert Account.recover_message(message, signature=signed.signature) == address


def test_file_is_exactly_an_eth_account_v3_keystore(wallet: Wallet, accounts: Path) -> None:
    address = wallet.new("alice", PASSWORD)
    stored = json.loads((accounts / "alice.json").read_text())
    assert set(stored) == {"address", "crypto", "id", "version"}
    assert stored["version"] == 3
    assert "0x" + stored["address"] == address
    assert stored["crypto"]["kdf"] == "scrypt"
    assert stored["crypto"]["kdfparams"]["n"] == FAST_N
    assert stored == wallet.export_keystore("alice")
    # Another implementation (eth-keyfile on its own) reads it.
    key = eth_keyfile.decode_keyfile_json(stored, PASSWORD.encode())
    assert Account.from_key(key).address == address


def test_list_and_address(wallet: Wallet, accounts: Path) -> None:
    assert wallet.list() == []
    assert not accounts.exists()  # listing creates nothing
    bob = wallet.new("bob", PASSWORD)
    alice = wallet.new("alice", "other password")
    carol = wallet.import_private_key("Carol.2", "0x" + "11" * 32, PASSWORD)
    assert wallet.list() == [("Carol.2", carol), ("alice", alice), ("bob", bob)]
    assert wallet.address("alice") == alice
    assert wallet.address("bob") == bob
    assert len({alice, bob, carol}) == 3
    # Temporary and foreign files in the directory are not accounts.
    (accounts / ".bob.json.tmp").write_text("{}")
    (accounts / "notes.txt").write_text("hello")
    (accounts / "has space.json").write_text("{}")
    assert [alias for alias, _ in wallet.list()] == ["Carol.2", "alice", "bob"]


def test_export_keystore_decrypts_with_plain_account_decrypt(wallet: Wallet) -> None:
    address = wallet.new("alice", PASSWORD)
    exported = wallet.export_keystore("alice")
    key = Account.decrypt(json.dumps(exported), PASSWORD)
    assert Account.from_key(key).address == address
    assert "0x" + key.hex() == wallet.export_private_key("alice", PASSWORD)


@pytest.mark.parametrize(
    "written",
    [
        "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
        "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
        "0X4C0883A69102937D6231471B5DBB6204FE5129617082792AE468D01A3F362318\n",
    ],
)
def test_import_and_export_private_key(wallet: Wallet, written: str) -> None:
    key = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
    address = wallet.import_private_key("imported", written, PASSWORD)
    assert address == Account.from_key(key).address
    assert wallet.export_private_key("imported", PASSWORD) == key
    assert wallet.unlock("imported", PASSWORD).key.hex() == key.removeprefix("0x")


def test_unicode_password(wallet: Wallet) -> None:
    wallet.new("alice", "pässwörd ✓")
    wallet.unlock("alice", "pässwörd ✓")
    with pytest.raises(WrongPassword):
        wallet.unlock("alice", "passwort")


def test_pbkdf2_on_request(accounts: Path) -> None:
    wallet = Wallet(accounts, kdf="pbkdf2", pbkdf2_iterations=1000)
    address = wallet.new("alice", PASSWORD)
    crypto = wallet.export_keystore("alice")["crypto"]
    assert crypto["kdf"] == "pbkdf2"
    assert crypto["kdfparams"]["c"] == 1000
    assert crypto["kdfparams"]["prf"] == "hmac-sha256"
    assert wallet.unlock("alice", PASSWORD).address == address


# ---------------------------------------------------------------------------- other tools' files
@pytest.mark.parametrize("vector", [PBKDF2_VECTOR, SCRYPT_VECTOR], ids=["pbkdf2", "scrypt"])
def test_secret_storage_test_vectors(wallet: Wallet, accounts: Path, vector: str) -> None:
    assert wallet.import_keystore("vector", vector, VECTOR_PASSWORD) == VECTOR_ADDRESS
    assert wallet.export_private_key("vector", VECTOR_PASSWORD) == VECTOR_KEY
    assert wallet.unlock("vector", VECTOR_PASSWORD).address == VECTOR_ADDRESS
    # Stored as given, plus the address (still a valid v3 keystore) so `list` needs no password.
    stored = json.loads((accounts / "vector.json").read_text())
    assert stored == {"address": VECTOR_ADDRESS[2:], **json.loads(vector)}
    assert wallet.list() == [("vector", VECTOR_ADDRESS)]
    assert Account.decrypt(stored, VECTOR_PASSWORD).hex() == VECTOR_KEY[2:]


def test_wrong_password_for_vector(wallet: Wallet, accounts: Path) -> None:
    with pytest.raises(WrongPassword, match="wrong password for the keystore JSON"):
        wallet.import_keystore("vector", PBKDF2_VECTOR, "testpassword!")
    assert snapshot(accounts) is None


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
def test_foreign_keystore_file_is_stored_byte_for_byte(
    wallet: Wallet, accounts: Path, tmp_path: Path, kdf: str
) -> None:
    key = "0x" + "42" * 32
    source = tmp_path / "UTC--2024-01-01T00-00-00Z--foreign.json"
    source.write_text(json.dumps(foreign_keystore(key, "their password", kdf), indent=4) + "\n")
    address = wallet.import_keystore("foreign", source, "their password")
    assert address == Account.from_key(key).address
    assert (accounts / "foreign.json").read_bytes() == source.read_bytes()
    assert wallet.export_private_key("foreign", "their password") == key
    assert wallet.address("foreign") == address


def test_import_ape_style_keystore_from_dict_and_text(wallet: Wallet) -> None:
    # ape writes `Account.encrypt(key, passphrase)` to ~/.ape/accounts/<alias>.json.
    key = "0x" + "07" * 32
    ape_file = Account.encrypt(key, "ape pass", iterations=FAST_N)
    assert (
        wallet.import_keystore("from-dict", ape_file, "ape pass") == Account.from_key(key).address
    )
    assert wallet.import_keystore("from-text", json.dumps(ape_file), "ape pass")
    assert wallet.export_keystore("from-dict") == ape_file
    assert wallet.export_keystore("from-text") == ape_file


def test_import_old_geth_capitalised_crypto_and_prefixed_address(wallet: Wallet) -> None:
    key = "0x" + "99" * 32
    address = Account.from_key(key).address
    old = foreign_keystore(key, "pw")
    old["Crypto"] = old.pop("crypto")
    old["address"] = "0x" + address[2:].lower()
    assert wallet.import_keystore("old", old, "pw") == address
    assert wallet.address("old") == address
    assert wallet.unlock("old", "pw").address == address


def test_new_keystores_always_have_a_16_byte_iv(
    wallet: Wallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # eth-keyfile 0.8 writes the IV as an integer, dropping leading zero bytes (1 time in 256);
    # strict readers such as cast's want 32 hex digits. Force an IV starting with zero bytes.
    real = eth_keyfile.keyfile.Random.get_random_bytes
    monkeypatch.setattr(
        eth_keyfile.keyfile.Random, "get_random_bytes", lambda n: b"\0\0" + real(n)[2:]
    )
    address = wallet.new("alice", PASSWORD)
    stored = wallet.export_keystore("alice")
    assert len(stored["crypto"]["cipherparams"]["iv"]) == 32
    assert stored["crypto"]["cipherparams"]["iv"].startswith("0000")
    assert Account.from_key(Account.decrypt(stored, PASSWORD)).address == address
    # Such shortened IVs from other tools still import (stored as they are) and unlock.
    short = Account.encrypt("0x" + "33" * 32, "pw", iterations=FAST_N)
    assert len(short["crypto"]["cipherparams"]["iv"]) < 32
    wallet.import_keystore("short-iv", short, "pw")
    assert wallet.export_keystore("short-iv") == short
    assert wallet.export_private_key("short-iv", "pw") == "0x" + "33" * 32


def test_old_geth_keystore_with_short_ciphertext(wallet: Wallet) -> None:
    # Old geth versions encrypted keys below 2**248 as 31 bytes (ciphertext of 62 hex digits).
    key = bytes(30) + b"\x01\x07"  # leading zero bytes
    salt, iv = b"\x01" * 32, 1234
    derived = eth_keyfile.keyfile._pbkdf2_hash(b"pw", "sha256", salt, 1000, 32)
    ciphertext = eth_keyfile.keyfile.encrypt_aes_ctr(key.lstrip(b"\0"), derived[:16], iv)
    keystore = {
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": f"{iv:032x}"},
            "ciphertext": ciphertext.hex(),
            "kdf": "pbkdf2",
            "kdfparams": {"c": 1000, "dklen": 32, "prf": "hmac-sha256", "salt": salt.hex()},
            "mac": keccak(derived[16:32] + ciphertext).hex(),
        },
        "id": "00000000-0000-4000-8000-000000000000",
        "version": 3,
    }
    assert wallet.import_keystore("geth", keystore, "pw") == Account.from_key(key).address
    assert wallet.export_private_key("geth", "pw") == "0x" + key.hex()


# ---------------------------------------------------------------------------- wrong passwords
def test_wrong_password(wallet: Wallet, accounts: Path) -> None:
    wallet.new("alice", PASSWORD)
    before = snapshot(accounts)
    with pytest.raises(WrongPassword) as exc:
        wallet.unlock("alice", "not it")
    assert one_line(exc).startswith("wrong password for account 'alice'")
    with pytest.raises(WrongPassword):
        wallet.export_private_key("alice", "not it")
    with pytest.raises(WrongPassword):
        wallet.import_keystore("copy", wallet.export_keystore("alice"), "not it")
    assert snapshot(accounts) == before


# ---------------------------------------------------------------------------- aliases
def test_unknown_alias(wallet: Wallet) -> None:
    with pytest.raises(UnknownAlias) as exc:
        wallet.address("alice")
    message = one_line(exc)
    assert "none yet" in message and "market wallet new alice" in message
    wallet.new("bob", PASSWORD)
    wallet.new("carol", PASSWORD)
    for call in (
        lambda: wallet.address("alice"),
        lambda: wallet.unlock("alice", PASSWORD),
        lambda: wallet.export_keystore("alice"),
        lambda: wallet.export_private_key("alice", PASSWORD),
    ):
        with pytest.raises(UnknownAlias) as exc:
            call()
        message = one_line(exc)
        assert "'alice'" in message and "bob, carol" in message
        assert "market wallet list" in message and "market wallet new alice" in message
    assert exc.value.known == ["bob", "carol"]


def test_duplicate_alias(wallet: Wallet, accounts: Path) -> None:
    wallet.new("alice", PASSWORD)
    before = snapshot(accounts)
    for call in (
        lambda: wallet.new("alice", PASSWORD),
        lambda: wallet.new("ALICE", PASSWORD),  # would be the same file on macOS and Windows
        lambda: wallet.import_private_key("alice", "0x" + "11" * 32, PASSWORD),
        lambda: wallet.import_keystore("alice", PBKDF2_VECTOR, VECTOR_PASSWORD),
        lambda: wallet.check_new_alias("Alice"),
    ):
        with pytest.raises(AliasExists) as exc:
            call()
        assert "already exists" in one_line(exc)
    assert snapshot(accounts) == before


@pytest.mark.parametrize(
    "alias",
    ["", ".hidden", "-flag", "a/b", "../up", "a b", "a\nb", "é", "x" * 65, "a:b", "a.json/"],
)
def test_invalid_alias(wallet: Wallet, accounts: Path, alias: str) -> None:
    for call in (
        lambda: wallet.new(alias, PASSWORD),
        lambda: wallet.import_private_key(alias, "0x" + "11" * 32, PASSWORD),
        lambda: wallet.import_keystore(alias, PBKDF2_VECTOR, VECTOR_PASSWORD),
        lambda: wallet.address(alias),
        lambda: wallet.unlock(alias, PASSWORD),
    ):
        with pytest.raises(InvalidAlias) as exc:
            call()
        assert "1-64 characters" in one_line(exc)
    assert snapshot(accounts) is None


@pytest.mark.parametrize("alias", ["a", "0", "_", "x" * 64, "alice.eth", "dev-1_B.x-"])
def test_valid_alias(wallet: Wallet, alias: str) -> None:
    address = wallet.new(alias, PASSWORD)
    assert wallet.list() == [(alias, address)]


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "key",
    [
        "",
        "0x",
        "zz" * 32,
        "11" * 31,
        "11" * 33,
        "0x" + "00" * 32,
        "0x" + "ff" * 32,
        "0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",  # the group order
        "0x 11" + "11" * 31,
    ],
)
def test_invalid_private_key(wallet: Wallet, accounts: Path, key: str) -> None:
    with pytest.raises(InvalidPrivateKey) as exc:
        wallet.import_private_key("alice", key, PASSWORD)
    message = one_line(exc)
    assert "64 hex digits" in message
    if len(key) > 10:
        assert key.strip() not in message  # never echo a (possibly real) key
    assert snapshot(accounts) is None


def test_empty_password_rejected_for_new_keystores(wallet: Wallet, accounts: Path) -> None:
    with pytest.raises(WalletError, match="non-empty password"):
        wallet.new("alice", "")
    with pytest.raises(WalletError, match="non-empty password"):
        wallet.import_private_key("alice", "0x" + "11" * 32, "")
    assert snapshot(accounts) is None
    # A keystore another tool encrypted with an empty password still imports and unlocks.
    wallet.import_keystore("empty", foreign_keystore("0x" + "11" * 32, ""), "")
    assert wallet.unlock("empty", "").address == Account.from_key("0x" + "11" * 32).address


def _valid() -> dict[str, Any]:
    return json.loads(PBKDF2_VECTOR)


def _edit(path: str, value: Any) -> str:
    data = _valid()
    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target[part]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return json.dumps(data)


_DELETE = object()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ("{", "not JSON"),
        ("[1, 2]", "JSON is not an object"),
        ("{}", "has no 'version'"),
        (_edit("version", 1), "version is 1"),
        (_edit("version", "3"), "version is '3'"),
        (_edit("version", 4), "version is 4"),
        (_edit("crypto", _DELETE), "has no 'crypto'"),
        (_edit("crypto", "abc"), "crypto is not an object"),
        (_edit("crypto.cipher", "aes-128-cbc"), "only aes-128-ctr"),
        (_edit("crypto.cipherparams.iv", "00" * 17), "iv is 17 bytes, expected at most 16"),
        (_edit("crypto.cipherparams.iv", ""), "iv is empty"),
        (_edit("crypto.ciphertext", "xyz"), "ciphertext is not a hex string"),
        (_edit("crypto.ciphertext", "00" * 33), "ciphertext is 33 bytes"),
        (_edit("crypto.mac", _DELETE), "crypto has no 'mac'"),
        (_edit("crypto.kdf", "argon2"), "expected scrypt or pbkdf2"),
        (_edit("crypto.kdfparams.prf", "hmac-sha512"), "only hmac-sha256"),
        (_edit("crypto.kdfparams.c", 0), "c is 0, not a positive integer"),
        (_edit("crypto.kdfparams.c", "1000"), "not a positive integer"),
        (_edit("crypto.kdfparams.dklen", 16), "dklen is 16, expected 32"),
        (_edit("crypto.kdfparams.salt", ""), "salt is empty"),
        (_edit("address", "0x1234"), "not a 20-byte hex address"),
    ],
    ids=lambda value: value if len(value) < 30 else None,
)
def test_malformed_keystore(
    wallet: Wallet, accounts: Path, tmp_path: Path, text: str, problem: str
) -> None:
    source = tmp_path / "keystore.json"
    source.write_text(text)
    with pytest.raises(InvalidKeystore) as exc:
        wallet.import_keystore("bad", source, VECTOR_PASSWORD)
    message = one_line(exc)
    assert problem in message and str(source) in message and "v3 keystore" in message
    assert snapshot(accounts) is None


def test_import_source_kinds(wallet: Wallet, tmp_path: Path) -> None:
    # A str is JSON text when it starts with "{", else a path.
    (tmp_path / "k.json").write_text(PBKDF2_VECTOR)
    assert wallet.import_keystore("a", str(tmp_path / "k.json"), VECTOR_PASSWORD)
    assert wallet.import_keystore("b", "  " + PBKDF2_VECTOR, VECTOR_PASSWORD)
    with pytest.raises(InvalidKeystore, match="the keystore JSON is not .* not JSON"):
        wallet.import_keystore("c", "{oops", VECTOR_PASSWORD)


def test_malformed_scrypt_params(wallet: Wallet) -> None:
    bad = json.loads(SCRYPT_VECTOR)
    bad["crypto"]["kdfparams"]["n"] = 1000
    with pytest.raises(InvalidKeystore, match="n is 1000, not a power of two"):
        wallet.import_keystore("bad", bad, VECTOR_PASSWORD)


def test_address_field_must_match_key(wallet: Wallet, accounts: Path) -> None:
    lying = foreign_keystore("0x" + "11" * 32, "pw")
    lying["address"] = Account.from_key("0x" + "22" * 32).address[2:]
    with pytest.raises(InvalidKeystore, match="says its address is") as exc:
        wallet.import_keystore("liar", lying, "pw")
    one_line(exc)
    assert snapshot(accounts) is None


def test_unreadable_keystore_file(wallet: Wallet, tmp_path: Path, accounts: Path) -> None:
    with pytest.raises(WalletError, match="cannot read keystore file") as exc:
        wallet.import_keystore("x", tmp_path / "missing.json", "pw")
    one_line(exc)
    assert snapshot(accounts) is None


def test_damaged_stored_keystore(wallet: Wallet, accounts: Path) -> None:
    wallet.new("alice", PASSWORD)
    stored = wallet.export_keystore("alice")
    (accounts / "alice.json").write_text("garbage")
    for call in (
        lambda: wallet.address("alice"),
        lambda: wallet.list(),
        lambda: wallet.unlock("alice", PASSWORD),
        lambda: wallet.export_keystore("alice"),
    ):
        with pytest.raises(InvalidKeystore) as exc:
            call()
        assert str(accounts / "alice.json") in one_line(exc)
    # An edited address field is caught when the key is decrypted.
    edited = copy.deepcopy(stored)
    edited["address"] = Account.from_key("0x" + "22" * 32).address[2:]
    (accounts / "alice.json").write_text(json.dumps(edited))
    with pytest.raises(InvalidKeystore, match="says its address is"):
        wallet.unlock("alice", PASSWORD)
    # A keystore copied in by hand without an address: clear advice.
    del edited["address"]
    (accounts / "alice.json").write_text(json.dumps(edited))
    with pytest.raises(InvalidKeystore, match="market wallet import alice"):
        wallet.address("alice")


# ---------------------------------------------------------------------------- files
@posix_only
def test_file_and_directory_modes(wallet: Wallet, accounts: Path) -> None:
    old_umask = os.umask(0o000)  # the modes must not depend on the umask
    try:
        wallet.new("alice", PASSWORD)
        wallet.import_keystore("vector", PBKDF2_VECTOR, VECTOR_PASSWORD)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(accounts.stat().st_mode) == 0o700
    for name in ("alice.json", "vector.json"):
        assert stat.S_IMODE((accounts / name).stat().st_mode) == 0o600
    assert sorted(os.listdir(accounts)) == ["alice.json", "vector.json"]  # no temporary files


def test_failed_write_leaves_nothing(
    wallet: Wallet, accounts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wallet.new("alice", PASSWORD)
    before = snapshot(accounts)

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keystore_module.os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        wallet.new("bob", PASSWORD)
    assert snapshot(accounts) == before


# ---------------------------------------------------------------------------- scrypt cost
def test_scrypt_n_from_env(accounts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert scrypt_n_from_env() is None
    monkeypatch.setenv(SCRYPT_N_ENV, "2048")
    assert scrypt_n_from_env() == 2048
    Wallet(accounts).new("env", PASSWORD)
    Wallet(accounts, scrypt_n=1024).new("param", PASSWORD)  # the parameter wins
    wallet = Wallet(accounts)
    assert wallet.export_keystore("env")["crypto"]["kdfparams"]["n"] == 2048
    assert wallet.export_keystore("param")["crypto"]["kdfparams"]["n"] == 1024
    assert wallet.unlock("env", PASSWORD).address == wallet.address("env")


@pytest.mark.parametrize("raw", ["1000", "1", "0", "-4096", "lots", "2**12"])
def test_scrypt_n_env_rejects_bad_values(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(SCRYPT_N_ENV, raw)
    with pytest.raises(WalletError, match=SCRYPT_N_ENV) as exc:
        scrypt_n_from_env()
    one_line(exc)


def test_default_scrypt_parameters_are_eth_accounts(
    accounts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETH_ACCOUNT_KDF", "pbkdf2")  # eth-account's own switch does not apply
    calls: list[dict[str, Any]] = []
    encrypt = Account.encrypt

    def spy(key: Any, password: str, kdf: Any = None, iterations: Any = None) -> dict[str, Any]:
        calls.append({"kdf": kdf, "iterations": iterations})
        return encrypt(key, password, kdf=kdf, iterations=iterations or FAST_N)

    monkeypatch.setattr(Account, "encrypt", spy)
    Wallet(accounts).new("alice", PASSWORD)
    assert calls == [{"kdf": "scrypt", "iterations": None}]  # None: eth-account's n=2**18


def test_constructor_rejects_bad_settings(accounts: Path) -> None:
    with pytest.raises(ValueError):
        Wallet(accounts, scrypt_n=1000)
    with pytest.raises(ValueError):
        Wallet(accounts, kdf="argon2")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Wallet(accounts, kdf="pbkdf2", pbkdf2_iterations=0)


# ---------------------------------------------------------------------------- passwords
def _never() -> str:
    raise AssertionError("prompted although a password was given")


def test_password_file_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from env")
    file = tmp_path / "password"
    file.write_text("  from file  \nsecond line\n")
    got = resolve_password(password_file=file, prompt=_never, purpose="unlock account 'a'")
    assert got == "  from file  "  # spaces are part of the password
    file.write_text("windows\r\n")
    assert resolve_password(password_file=file, prompt=_never, purpose="x") == "windows"
    file.write_text("no newline")
    assert resolve_password(password_file=file, prompt=_never, purpose="x") == "no newline"


def test_password_env_then_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from env")
    assert resolve_password(password_file=None, prompt=_never, purpose="x") == "from env"
    monkeypatch.setenv("OTHER_PASSWORD", "other")
    got = resolve_password(password_file=None, env_var="OTHER_PASSWORD", prompt=_never, purpose="x")
    assert got == "other"
    monkeypatch.setenv(PASSWORD_ENV, "")  # set but empty counts as unset
    assert resolve_password(password_file=None, prompt=lambda: "typed", purpose="x") == "typed"
    monkeypatch.delenv(PASSWORD_ENV)
    assert resolve_password(password_file=None, prompt=lambda: "typed", purpose="x") == "typed"


def test_password_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WalletError) as exc:
        resolve_password(password_file=None, prompt=None, purpose="unlock account 'alice'")
    message = one_line(exc)
    assert "unlock account 'alice'" in message
    assert "--password-file" in message and PASSWORD_ENV in message and "no terminal" in message


def test_password_file_unreadable(tmp_path: Path) -> None:
    with pytest.raises(WalletError, match="cannot read password file") as exc:
        resolve_password(password_file=tmp_path / "nope", prompt=_never, purpose="x")
    one_line(exc)
    with pytest.raises(WalletError, match="cannot read password file"):
        resolve_password(password_file=tmp_path, prompt=_never, purpose="x")  # a directory


def test_empty_password(tmp_path: Path) -> None:
    file = tmp_path / "password"
    file.write_text("\nsecond line")
    with pytest.raises(WalletError, match="empty password") as exc:
        resolve_password(password_file=file, prompt=_never, purpose="encrypt account 'a'")
    one_line(exc)
    with pytest.raises(WalletError, match="empty password"):
        resolve_password(password_file=None, prompt=lambda: "", purpose="x")
    assert resolve_password(password_file=file, prompt=_never, purpose="x", allow_empty=True) == ""
