"""Accounts kept as encrypted keystores: one Web3 Secret Storage v3 file per alias.

The layout is ape's: a directory holding `<alias>.json`, each file exactly the v3 keystore
JSON that `eth_account.Account.encrypt` writes (scrypt by default). Files made here decrypt
with `cast wallet` (`--keystore FILE`), ape and geth, and their keystores import here.

Nothing is written until every check has passed (alias, private key, keystore structure,
password), and files are written atomically (a temporary file in the same directory, then
`os.replace`) with mode 0600, in a directory created with mode 0700.

Environment:

- `MARKET_KEYSTORE_SCRYPT_N`: the scrypt cost `n` for new keystores (a power of two; the
  default is eth-account's 2**18). Only meant to make tests fast: a small `n` makes the
  password easy to brute-force.
- `MARKET_PASSWORD`: the default `env_var` of `resolve_password`.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from market.errors import MarketError

__all__ = [
    "PASSWORD_ENV",
    "SCRYPT_N_ENV",
    "AliasExists",
    "InvalidAlias",
    "InvalidKeystore",
    "InvalidPrivateKey",
    "Kdf",
    "UnknownAlias",
    "Wallet",
    "WalletError",
    "WrongPassword",
    "read_password_file",
    "resolve_password",
    "scrypt_n_from_env",
    "validate_alias",
]

SCRYPT_N_ENV = "MARKET_KEYSTORE_SCRYPT_N"
PASSWORD_ENV = "MARKET_PASSWORD"

Kdf = Literal["scrypt", "pbkdf2"]

_ALIAS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-F]*)")
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_SUFFIX = ".json"


# ---------------------------------------------------------------------------- errors
class WalletError(MarketError):
    """Something the user can fix; the message is one line and says what to do."""


class InvalidAlias(WalletError):
    def __init__(self, alias: str) -> None:
        self.alias = alias
        super().__init__(
            f"invalid account alias {_show(alias)}: use 1-64 characters from A-Z a-z 0-9 _ . -"
            " that do not start with '.' or '-'"
        )


class UnknownAlias(WalletError):
    def __init__(self, alias: str, known: builtins.list[str]) -> None:
        self.alias = alias
        self.known = known
        listing = ", ".join(known) if known else "none yet"
        super().__init__(
            f"no account {_show(alias)} (known accounts: {listing}); see `market wallet list`,"
            f" or create it with `market wallet new {alias}`"
        )


class AliasExists(WalletError):
    def __init__(self, alias: str, existing: str) -> None:
        self.alias = alias
        self.existing = existing
        same = "" if existing == alias else f" as {_show(existing)} (aliases ignore case)"
        super().__init__(
            f"account {_show(alias)} already exists{same}; choose another alias"
            " (`market wallet list` shows the ones taken)"
        )


class WrongPassword(WalletError):
    pass


class InvalidKeystore(WalletError):
    pass


class InvalidPrivateKey(WalletError):
    pass


def _show(value: object, limit: int = 70) -> str:
    """`value` as a repr for a one-line message (repr escapes newlines), shortened if long."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


# ---------------------------------------------------------------------------- settings
def validate_alias(alias: str) -> str:
    """`alias` if it is 1-64 characters of `[A-Za-z0-9_.-]` not starting with `.` or `-`;
    else `InvalidAlias`."""
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidAlias(str(alias))
    return alias


def scrypt_n_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """The scrypt `n` from `$MARKET_KEYSTORE_SCRYPT_N`, or None when it is unset or empty."""
    raw = (os.environ if environ is None else environ).get(SCRYPT_N_ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not _is_scrypt_n(n):
        raise WalletError(
            f"{SCRYPT_N_ENV}={_show(raw)} is not a power of two >= 2; set it to e.g. 4096,"
            " or unset it for the default (262144)"
        )
    return n


def _is_scrypt_n(n: object) -> bool:
    return type(n) is int and n >= 2 and n & (n - 1) == 0


# ---------------------------------------------------------------------------- passwords
def read_password_file(path: Path) -> str:
    """The first line of `path` without its line ending (`\\n` or `\\r\\n`); other
    whitespace is part of the password."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WalletError(
            f"cannot read password file {path}: {reason}; give a readable UTF-8 file whose"
            " first line is the password"
        ) from None
    return text.split("\n", 1)[0].removesuffix("\r")


def resolve_password(
    *,
    password_file: Path | None,
    env_var: str = PASSWORD_ENV,
    prompt: Callable[[], str] | None,
    purpose: str,
    allow_empty: bool = False,
) -> str:
    """The password to `purpose` (e.g. "unlock account 'alice'"), from the first of:

    1. `password_file`, its first line (see `read_password_file`);
    2. the environment variable `env_var`, if set and not empty;
    3. `prompt()`, if a prompt is given (None when there is no terminal).

    Raises `WalletError` when none applies, or when the password is empty and `allow_empty`
    is false (the default: right for new keystores; pass True to unlock keystores another
    tool created with an empty password).
    """
    if password_file is not None:
        password = read_password_file(password_file)
        source = f"password file {password_file}"
    elif os.environ.get(env_var):
        password = os.environ[env_var]
        source = f"${env_var}"
    elif prompt is not None:
        password = prompt()
        source = "the prompt"
    else:
        raise WalletError(
            f"no password to {purpose} and no terminal to ask in: pass --password-file FILE "
            f"(its first line) or set ${env_var}"
        )
    if not password and not allow_empty:
        raise WalletError(f"empty password from {source} to {purpose}: use a non-empty password")
    return password


# ---------------------------------------------------------------------------- keystores
class _Problem(Exception):
    """What is wrong with a keystore's structure (becomes an InvalidKeystore)."""


def _lower_keys(value: Any) -> Any:
    """Keys lowercased, as eth-keyfile reads them (old geth files say "Crypto")."""
    if isinstance(value, dict):
        return {k.lower() if isinstance(k, str) else k: _lower_keys(v) for k, v in value.items()}
    return value


def _field(obj: dict[str, Any], name: str, where: str) -> Any:
    if name not in obj:
        raise _Problem(f"{where} has no {name!r}")
    return obj[name]


def _object(obj: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = _field(obj, name, where)
    if not isinstance(value, dict):
        raise _Problem(f"{where}.{name} is not an object")
    return value


def _int(obj: dict[str, Any], name: str, where: str) -> int:
    value = _field(obj, name, where)
    if type(value) is not int or value < 1:
        raise _Problem(f"{where}.{name} is {_show(value, 30)}, not a positive integer")
    return value


def _hex(obj: dict[str, Any], name: str, where: str, size: int = 0, exact: bool = True) -> bytes:
    """The bytes of hex field `name`: exactly `size` bytes, or 1 to `size` when not `exact`
    (any non-empty length when `size` is 0)."""
    value = _field(obj, name, where)
    match = _HEX.fullmatch(value) if isinstance(value, str) else None
    if match is None or len(match.group(1)) % 2:
        raise _Problem(f"{where}.{name} is not a hex string")
    data = bytes.fromhex(match.group(1))
    if not data:
        raise _Problem(f"{where}.{name} is empty")
    if size and (len(data) != size if exact else len(data) > size):
        expected = size if exact else f"at most {size}"
        raise _Problem(f"{where}.{name} is {len(data)} bytes, expected {expected}")
    return data


def _check_v3(data: Any) -> str | None:
    """Checks that `data` (parsed JSON) is a v3 keystore eth-account can decrypt; returns
    its checksummed `address` field, or None when it has none. Raises `_Problem`."""
    if not isinstance(data, dict):
        raise _Problem("the JSON is not an object")
    keystore = _lower_keys(data)
    version = _field(keystore, "version", "the keystore")
    if type(version) is not int or version != 3:
        raise _Problem(f"its version is {_show(version, 30)}, only version 3 is supported")
    crypto = _object(keystore, "crypto", "the keystore")
    cipher = _field(crypto, "cipher", "crypto")
    if cipher != "aes-128-ctr":
        raise _Problem(f"crypto.cipher is {_show(cipher, 30)}, only aes-128-ctr is supported")
    # eth-keyfile 0.8 (eth-account's, so ape's too) drops the IV's leading zero bytes, in 1
    # keystore out of 256; old geth versions did the same to keys, shortening the ciphertext.
    _hex(_object(crypto, "cipherparams", "crypto"), "iv", "crypto.cipherparams", 16, False)
    _hex(crypto, "ciphertext", "crypto", 32, False)
    _hex(crypto, "mac", "crypto", 32)
    kdf = _field(crypto, "kdf", "crypto")
    params = _object(crypto, "kdfparams", "crypto")
    where = "crypto.kdfparams"
    if kdf == "scrypt":
        n = _int(params, "n", where)
        if not _is_scrypt_n(n):
            raise _Problem(f"{where}.n is {n}, not a power of two")
        if _int(params, "r", where) * _int(params, "p", where) >= 2**30:
            raise _Problem(f"{where}.r * p is too large")
    elif kdf == "pbkdf2":
        _int(params, "c", where)
        prf = _field(params, "prf", where)
        if prf != "hmac-sha256":
            raise _Problem(f"{where}.prf is {_show(prf, 30)}, only hmac-sha256 is supported")
    else:
        raise _Problem(f"crypto.kdf is {_show(kdf, 30)}, expected scrypt or pbkdf2")
    if _int(params, "dklen", where) != 32:
        raise _Problem(f"{where}.dklen is {params['dklen']}, expected 32")
    _hex(params, "salt", where)
    if "address" not in keystore:
        return None
    address = keystore["address"]
    if not isinstance(address, str) or not re.fullmatch(r"(?:0x)?[0-9a-fA-F]{40}", address):
        raise _Problem(f"its address {_show(address, 50)} is not a 20-byte hex address")
    return to_checksum_address("0x" + address.removeprefix("0x")[-40:])


def _parse_private_key(private_key_hex: str) -> bytes:
    text = private_key_hex.strip() if isinstance(private_key_hex, str) else ""
    match = _HEX.fullmatch(text)
    digits = match.group(1) if match else ""
    if len(digits) != 64 or not 0 < int(digits, 16) < _SECP256K1_N:
        # Never echo the input: it may be a real key with a typo.
        raise InvalidPrivateKey(
            "invalid private key: give 64 hex digits (0x prefix optional) encoding a"
            " secp256k1 private key"
        )
    return bytes.fromhex(digits)


class Wallet:
    """The accounts in `directory`, one `<alias>.json` v3 keystore each.

    New keystores use `kdf` ("scrypt", the default, or "pbkdf2"). The scrypt cost `n` is
    `scrypt_n`, else `$MARKET_KEYSTORE_SCRYPT_N`, else eth-account's default (2**18); the
    pbkdf2 iteration count is `pbkdf2_iterations`, else eth-account's default (10**6).
    """

    def __init__(
        self,
        directory: Path,
        scrypt_n: int | None = None,
        *,
        kdf: Kdf = "scrypt",
        pbkdf2_iterations: int | None = None,
    ) -> None:
        if kdf not in ("scrypt", "pbkdf2"):
            raise ValueError(f"kdf must be 'scrypt' or 'pbkdf2', not {kdf!r}")
        if scrypt_n is not None and not _is_scrypt_n(scrypt_n):
            raise ValueError(f"scrypt_n must be a power of two >= 2, not {scrypt_n!r}")
        if pbkdf2_iterations is not None and (
            type(pbkdf2_iterations) is not int or pbkdf2_iterations < 1
        ):
            raise ValueError(f"pbkdf2_iterations must be positive, not {pbkdf2_iterations!r}")
        self.directory = Path(directory)
        self.kdf: Kdf = kdf
        self.scrypt_n = scrypt_n if scrypt_n is not None else scrypt_n_from_env()
        self.pbkdf2_iterations = pbkdf2_iterations

    # ------------------------------------------------------------------ lookups
    def path(self, alias: str) -> Path:
        """Where `alias`'s keystore is (or would be) kept."""
        return self.directory / (validate_alias(alias) + _SUFFIX)

    def aliases(self) -> builtins.list[str]:
        """Every alias with a keystore file, sorted. Files whose names are not
        `<valid alias>.json` (such as temporary files) are ignored."""
        try:
            entries = list(os.scandir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise WalletError(
                f"cannot read the account directory {self.directory}: {exc.strerror};"
                " check its permissions"
            ) from None
        found = []
        for entry in entries:
            alias = entry.name.removesuffix(_SUFFIX)
            if entry.name.endswith(_SUFFIX) and _ALIAS.fullmatch(alias) and entry.is_file():
                found.append(alias)
        return sorted(found)

    def check_new_alias(self, alias: str) -> None:
        """Raises `InvalidAlias` or `AliasExists` unless `alias` can name a new account
        (aliases that differ only in case clash, as they would on macOS and Windows)."""
        validate_alias(alias)
        for existing in self.aliases():
            if existing.lower() == alias.lower():
                raise AliasExists(alias, existing)
        if self.path(alias).exists():  # a case-insensitive file system with odd names
            raise AliasExists(alias, alias)

    def address(self, alias: str) -> str:
        """`alias`'s checksummed address, read from its keystore (no password needed)."""
        address = self._load(alias)[1]
        if address is None:
            raise InvalidKeystore(
                f"{self.path(alias)} has no 'address' field; move it out of {self.directory}"
                f" and import it with `market wallet import {alias} --keystore FILE`"
            )
        return address

    # ------------------------------------------------------------------ creating
    def new(self, alias: str, password: str) -> str:
        """Creates `alias` with a fresh random key; returns its checksummed address."""
        self.check_new_alias(alias)
        _check_new_password(password)
        return self._store_key(alias, Account.create().key, password)

    def import_private_key(self, alias: str, private_key_hex: str, password: str) -> str:
        """Stores `private_key_hex` (64 hex digits, 0x optional) as `alias`, encrypted with
        `password`; returns its checksummed address."""
        self.check_new_alias(alias)
        key = _parse_private_key(private_key_hex)
        _check_new_password(password)
        return self._store_key(alias, key, password)

    def import_keystore(
        self, alias: str, source: Path | str | Mapping[str, Any], password: str
    ) -> str:
        """Stores a v3 keystore made by another tool (cast, ape, geth...) as `alias`
        and returns its checksummed address.

        `source` is a file (a `Path`, or a `str` that does not start with `{`), JSON text (a
        `str` starting with `{`), or the parsed JSON. It must decrypt with `password` (else
        `WrongPassword`). The JSON is stored as given; when it has no `address` field, one
        (the address of the decrypted key) is added so `list` can work without a password.
        """
        self.check_new_alias(alias)
        text, data, where = _read_source(source)
        try:
            address = _check_v3(data)
        except _Problem as exc:
            raise InvalidKeystore(
                f"{where} is not a Web3 Secret Storage v3 keystore: {exc}; give a v3 keystore"
                " JSON file (as geth, cast and ape write)"
            ) from None
        key = _decrypt(
            data,
            password,
            wrong=f"wrong password for {where}: give the password it was encrypted with",
            invalid=f"{where} is not a usable keystore",
        )
        derived = Account.from_key(key).address
        if address is not None and address != derived:
            raise InvalidKeystore(
                f"{where} says its address is {address} but its key is for {derived};"
                " the file is damaged or was edited: export it again"
            )
        if address is None:
            text = json.dumps({"address": derived.removeprefix("0x"), **data})
        elif text is None:
            text = json.dumps(data)
        self._write_new(alias, text)
        return derived

    # ------------------------------------------------------------------ using
    def unlock(self, alias: str, password: str) -> LocalAccount:
        """`alias`'s account, decrypted with `password` (else `WrongPassword`)."""
        return Account.from_key(self._decrypt_stored(alias, password))

    def export_keystore(self, alias: str) -> dict[str, Any]:
        """`alias`'s keystore JSON, as stored (a v3 keystore; no password needed)."""
        return self._load(alias)[0]

    def export_private_key(self, alias: str, password: str) -> str:
        """`alias`'s private key as 0x-prefixed hex (64 lowercase digits)."""
        return "0x" + self._decrypt_stored(alias, password).hex()

    def list(self) -> builtins.list[tuple[str, str]]:
        """(alias, checksummed address) for every account, sorted by alias."""
        return [(alias, self.address(alias)) for alias in self.aliases()]

    # ------------------------------------------------------------------ internals
    def _load(self, alias: str) -> tuple[dict[str, Any], str | None]:
        """`alias`'s keystore JSON and its address field, checked to be a v3 keystore."""
        path = self.path(alias)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UnknownAlias(alias, self.aliases()) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidKeystore(
                f"cannot read {path}: {reason}; check the file (it should be a v3 keystore)"
            ) from None
        try:
            data = json.loads(text)
            return data, _check_v3(data)
        except (ValueError, _Problem) as exc:
            problem = f"not JSON ({exc})" if isinstance(exc, ValueError) else str(exc)
            raise InvalidKeystore(
                f"{path} is not a Web3 Secret Storage v3 keystore: {problem};"
                " restore it from a backup or move it out of the directory"
            ) from None

    def _decrypt_stored(self, alias: str, password: str) -> bytes:
        data, address = self._load(alias)
        path = self.path(alias)
        key = _decrypt(
            data,
            password,
            wrong=f"wrong password for account {_show(alias)}; check the password and try again",
            invalid=f"{path} is not a usable keystore",
        )
        derived = Account.from_key(key).address
        if address is not None and address != derived:
            raise InvalidKeystore(
                f"{path} says its address is {address} but its key is for {derived};"
                " the file was edited or damaged: restore it from a backup"
            )
        return key

    def _store_key(self, alias: str, key: bytes, password: str) -> str:
        if self.kdf == "scrypt":
            keystore = Account.encrypt(key, password, kdf="scrypt", iterations=self.scrypt_n)
        else:
            keystore = Account.encrypt(
                key, password, kdf="pbkdf2", iterations=self.pbkdf2_iterations
            )
        # The IV as 16 bytes even when it starts with zero bytes, which eth-keyfile 0.8 drops
        # and strict readers (cast's eth-keystore) reject; the same number, decrypts the same.
        cipherparams = keystore["crypto"]["cipherparams"]
        cipherparams["iv"] = cipherparams["iv"].zfill(32)
        self._write_new(alias, json.dumps(keystore))
        return Account.from_key(key).address

    def _write_new(self, alias: str, text: str) -> None:
        """Writes `text` as `alias`'s keystore: a new 0600 file, in place all at once."""
        self.check_new_alias(alias)
        path = self.path(alias)
        try:
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(self.directory, 0o700)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{alias}.", suffix=".tmp")
        except OSError as exc:
            raise WalletError(
                f"cannot write to the account directory {self.directory}: {exc.strerror};"
                " check that it is a writable directory"
            ) from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                os.chmod(tmp, 0o600)
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_directory(self.directory)


def _check_new_password(password: str) -> None:
    if not isinstance(password, str) or not password:
        raise WalletError("empty password: new keystores need a non-empty password")


def _read_source(source: Path | str | Mapping[str, Any]) -> tuple[str | None, Any, str]:
    """(the original text or None, the parsed JSON, a description) of a keystore to import."""
    if isinstance(source, Mapping):
        return None, dict(source), "the keystore"
    if isinstance(source, str) and source.lstrip().startswith("{"):
        text, where = source, "the keystore JSON"
    else:
        where = f"keystore file {source}"
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise WalletError(
                f"cannot read {where}: {reason}; give the path of a v3 keystore JSON file"
            ) from None
    try:
        return text, json.loads(text), where
    except ValueError as exc:
        raise InvalidKeystore(
            f"{where} is not a Web3 Secret Storage v3 keystore: not JSON ({exc});"
            " give a v3 keystore JSON file (as geth, cast and ape write)"
        ) from None


def _decrypt(data: dict[str, Any], password: str, *, wrong: str, invalid: str) -> bytes:
    """The private key in `data` (already checked by `_check_v3`)."""
    try:
        # Left-pad: old geth stored keys below 2**248 in fewer than 32 bytes.
        key = bytes(Account.decrypt(data, password)).rjust(32, b"\0")
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPassword(wrong) from None
        raise InvalidKeystore(f"{invalid}: {exc}; export it again") from None
    except Exception as exc:  # eth-keyfile raises KeyError, TypeError... on odd input
        raise InvalidKeystore(f"{invalid}: {type(exc).__name__}: {exc}; export it again") from None
    if not 0 < int.from_bytes(key, "big") < _SECP256K1_N:
        raise InvalidKeystore(f"{invalid}: it decrypts to an invalid private key")
    return key


def _fsync_directory(directory: Path) -> None:
    """Makes the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
