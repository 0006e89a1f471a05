"""Accounts as encrypted Web3 Secret Storage v3 keystores, one `<alias>.json` per account
(the layout ape uses; the files work with cast, ape and geth). See `keystore`."""

from market.wallet.keystore import (
    PASSWORD_ENV,
    SCRYPT_N_ENV,
    AliasExists,
    InvalidAlias,
    InvalidKeystore,
    InvalidPrivateKey,
    Kdf,
    UnknownAlias,
    Wallet,
    WalletError,
    WrongPassword,
    read_password_file,
    resolve_password,
    scrypt_n_from_env,
    validate_alias,
)

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
