"""`market wallet`: keystores in the standard Web3 Secret Storage (v3) format."""

from __future__ import annotations

import json
from pathlib import Path

import click

from market.cli.common import (
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    UserError,
    _prompt,
    emit_json,
    json_option,
    out,
    table,
    wallet,
)
from market.wallet import resolve_password

password_file_option = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar=PASSWORD_FILE_ENV,
    help=f"File whose first line is the password (also ${PASSWORD_FILE_ENV}; else "
    f"${PASSWORD_ENV}, else a prompt in a terminal).",
)


def _new_password(password_file: Path | None, alias: str) -> str:
    prompt = _prompt(f"Password for the new account '{alias}'")
    confirm = None
    if prompt is not None:

        def confirm() -> str:
            return click.prompt(
                f"Password for the new account '{alias}'",
                hide_input=True,
                confirmation_prompt=True,
                err=True,
            )

    return resolve_password(
        password_file=password_file,
        env_var=PASSWORD_ENV,
        prompt=confirm or prompt,
        purpose=f"encrypt account '{alias}'",
        allow_empty=False,
    )


def _password(password_file: Path | None, alias: str) -> str:
    return resolve_password(
        password_file=password_file,
        env_var=PASSWORD_ENV,
        prompt=_prompt(f"Password for account '{alias}'"),
        purpose=f"unlock account '{alias}'",
        allow_empty=True,
    )


@click.group("wallet")
def wallet_group() -> None:
    """Create, import, list and export accounts (keystores work with cast and ape)."""


@wallet_group.command("new")
@click.argument("alias")
@password_file_option
@json_option
def wallet_new(alias: str, password_file: Path | None, as_json: bool) -> None:
    """Create a new account ALIAS with a fresh key."""
    store = wallet()
    store.check_new_alias(alias)
    address = store.new(alias, _new_password(password_file, alias))
    if as_json:
        emit_json({"alias": alias, "address": address})
    else:
        out.print(f"created account '{alias}': {address}")


@wallet_group.command("import")
@click.argument("alias")
@click.option(
    "--keystore",
    "keystore",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A v3 keystore file (from cast, ape, geth, MetaMask...).",
)
@click.option(
    "--private-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file holding a 0x-prefixed hex private key.",
)
@password_file_option
@json_option
def wallet_import(
    alias: str,
    keystore: Path | None,
    private_key_file: Path | None,
    password_file: Path | None,
    as_json: bool,
) -> None:
    """Import ALIAS from a keystore file or a private key file."""
    if (keystore is None) == (private_key_file is None):
        raise UserError("give exactly one of --keystore FILE or --private-key-file FILE")
    store = wallet()
    store.check_new_alias(alias)
    if keystore is not None:
        address = store.import_keystore(alias, keystore, _password(password_file, alias))
    else:
        assert private_key_file is not None
        key = private_key_file.read_text().strip()
        address = store.import_private_key(alias, key, _new_password(password_file, alias))
    if as_json:
        emit_json({"alias": alias, "address": address})
    else:
        out.print(f"imported account '{alias}': {address}")


@wallet_group.command("list")
@json_option
def wallet_list(as_json: bool) -> None:
    """Every account, by alias."""
    accounts = wallet().list()
    if as_json:
        emit_json([{"alias": a, "address": addr} for a, addr in accounts])
    elif not accounts:
        out.print("no accounts yet: create one with `market wallet new ALIAS`")
    else:
        out.print(table(None, ["alias", "address"], [[a, addr] for a, addr in accounts]))


@wallet_group.command("address")
@click.argument("alias")
def wallet_address(alias: str) -> None:
    """Print the address of ALIAS."""
    click.echo(wallet().address(alias))


@wallet_group.command("export")
@click.argument("alias")
@click.option(
    "--private-key", "private_key", is_flag=True, help="Print the raw private key instead."
)
@password_file_option
def wallet_export(alias: str, private_key: bool, password_file: Path | None) -> None:
    """Print ALIAS's keystore JSON (or, with --private-key, its key) to stdout."""
    store = wallet()
    if private_key:
        click.echo(store.export_private_key(alias, _password(password_file, alias)))
    else:
        click.echo(json.dumps(store.export_keystore(alias)))
