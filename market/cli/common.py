"""What every `market` command shares: options for the network and the account, amounts and
times as people write them, output as tables or JSON, and one-line errors with stable exit
codes."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import click
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table

from market.chain import TOKEN, ChainConnectionError, ChainError, ContractRevert
from market.datasets import DatasetError
from market.escrow.documents import DocumentError
from market.home import Home
from market.network import NETWORKS, RPC_ENV, Network, open_network
from market.wallet import Wallet, WalletError, resolve_password

EXIT_ERROR = 1
"""Bad input or a failed precondition; the message says what to do."""
EXIT_USAGE = 2
"""A malformed command line (click's own code)."""
EXIT_REVERTED = 3
"""The chain rejected a transaction (a contract custom error)."""
EXIT_UNREACHABLE = 4
"""The network did not answer."""

ACCOUNT_ENV = "MARKET_ACCOUNT"
PASSWORD_ENV = "MARKET_PASSWORD"

err = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """A problem the user can fix; shown as one line, exit code 1."""

    exit_code = EXIT_ERROR

    def show(self, file: Any = None) -> None:
        fail_line(self.message)


def fail_line(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)


# Hints for the custom errors people run into; the decoded error is always shown as well.
REVERT_HINTS = {
    "ERC20InsufficientBalance": "the account holds fewer DATA tokens than this needs; "
    "get more (`market faucet` on a devnet) or use a smaller amount",
    "ERC20InsufficientAllowance": "the marketplace may not spend that much of the account's "
    "DATA; the command approves it itself, so retry",
    "MarketplaceNotEnoughHeavyNodes": "fewer active heavy nodes are registered than the "
    "committee needs; use a smaller --committee-size (`market heavy list`)",
    "MarketplaceCommitteeTooSmallToSlash": "a job that may slash needs a committee of at "
    "least 3; raise --committee-size or set --max-slash-bps 0",
    "MarketplaceAcceptWindowClosed": "the job's acceptance window is over",
    "MarketplaceAlreadyAccepted": "this heavy node already accepted the job",
    "MarketplaceDeadlineOutOfRange": "the deadline must be in the future and within the "
    "maximum job window; choose another --deadline",
    "MarketplaceStakeTooLow": "the stake is below the market's minimum; stake more",
    "MarketplaceStillUnbonding": "the stake is still unbonding; withdraw after the time shown",
    "MarketplaceNotUnbonding": "request the unstake first (`unstake`), then withdraw once the "
    "unbonding period is over",
    "MarketplaceAlreadyUnbonding": "an unstake was already requested; withdraw after the time "
    "shown",
    "MarketplaceDatasetExists": "a dataset with this id is already staked; register the file "
    "again to get a new id",
    "MarketplaceHeavyNodeAlreadyRegistered": "this account is already a registered heavy "
    "node; see `market heavy status`",
    "MarketplaceHeavyNodeNotRegistered": "this account is not a registered heavy node; "
    "register it first (`market heavy register`)",
    "MarketplaceNotDatasetOwner": "only the account that staked the dataset can do this; "
    "pass its --account",
    "MarketplaceDatasetNotFound": "no dataset with this id is staked (`market dataset list`)",
    "MarketplaceJobNotFound": "there is no job with this id (`market bounty list`)",
    "MarketplaceFeeTooHigh": "lower --fee-bps",
    "MarketplaceInvalidQuorum": "the quorum must be a strict majority of the committee",
    "MarketplaceInvalidProof": "the payout proof does not match the job's payout root",
    "MarketplaceAlreadyClaimed": "this payout was already claimed",
    "MarketplaceJobNotFinalized": "the job has not been settled yet; claim after it is",
    "MarketplaceJobNotExpired": "the job can still be staffed or settled by its committee; "
    "it can be cancelled after the time shown",
    "MarketplaceJobNotPosted": "the job is already settled, aborted or expired",
    "DataTokenFaucetDisabled": "this deployment has no faucet (not a devnet)",
    "DataTokenFaucetAboveLimit": "ask the faucet for less at a time",
}


class MarketGroup(click.Group):
    """Turns the errors a user can cause into one line on stderr and a stable exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ContractRevert as exc:
            hint = REVERT_HINTS.get(type(exc).__name__)
            fail_line(f"transaction reverted: {exc}" + (f" ({hint})" if hint else ""))
            sys.exit(EXIT_REVERTED)
        except ChainConnectionError as exc:
            fail_line(f"network unreachable: {exc}")
            sys.exit(EXIT_UNREACHABLE)
        except (ChainError, WalletError, DatasetError, DocumentError) as exc:
            fail_line(str(exc))
            sys.exit(EXIT_ERROR)


# ---------------------------------------------------------------------------- options
def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def network_options(fn: F) -> F:
    """`--network` and `--rpc-url`, passed to the command as `network` (a context manager
    factory returning the open `Network`)."""

    @click.option(
        "--network",
        "network_name",
        type=click.Choice(NETWORKS),
        default="embedded",
        show_default=True,
        help="The embedded chain (kept in $MARKET_HOME) or the local devnet.",
    )
    @click.option(
        "--rpc-url",
        envvar=RPC_ENV,
        default=None,
        help=f"Any EVM JSON-RPC endpoint instead of --network (also ${RPC_ENV}).",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, network_name: str, rpc_url: str | None, **kwargs: Any) -> Any:
        return fn(
            *args, network=lambda: open_network(Home.default(), network_name, rpc_url), **kwargs
        )

    return wrapper  # type: ignore[return-value]


def account_options(fn: F) -> F:
    """`--account ALIAS` and `--password-file`, passed as `signer` (a function that unlocks
    the account, prompting for its password when needed)."""

    @click.option(
        "--account",
        "alias",
        envvar=ACCOUNT_ENV,
        required=True,
        help=f"Keystore alias to act as (`market wallet list`; also ${ACCOUNT_ENV}).",
    )
    @click.option(
        "--password-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"File whose first line is the password (or ${PASSWORD_ENV}, or a prompt).",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, alias: str, password_file: Path | None, **kwargs: Any) -> Any:
        return fn(*args, signer=Signer(alias, password_file), **kwargs)

    return wrapper  # type: ignore[return-value]


class Signer:
    """An account chosen by alias, unlocked on first use."""

    def __init__(self, alias: str, password_file: Path | None) -> None:
        self.alias = alias
        self.password_file = password_file
        self._account: LocalAccount | None = None

    @property
    def address(self) -> str:
        return wallet().address(self.alias)

    def unlock(self) -> LocalAccount:
        if self._account is None:
            store = wallet()
            store.address(self.alias)  # an unknown alias fails before any prompt
            password = resolve_password(
                password_file=self.password_file,
                env_var=PASSWORD_ENV,
                prompt=_prompt(f"Password for account '{self.alias}'"),
                purpose=f"unlock account '{self.alias}'",
                allow_empty=True,
            )
            self._account = store.unlock(self.alias, password)
        return self._account


def _prompt(text: str) -> Callable[[], str] | None:
    """A password prompt, or None when nobody is there to answer it: no terminal, output to a
    file, or a background job (`... &`, which the shell would stop on the prompt)."""
    return (lambda: click.prompt(text, hide_input=True, err=True)) if _attended() else None


def _attended() -> bool:
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except OSError:
        return False


def wallet() -> Wallet:
    return Wallet(Home.default().accounts)


# ---------------------------------------------------------------------------- values
_AMOUNT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:DATA)?\s*$", re.IGNORECASE)


def parse_tokens(text: str, what: str = "amount") -> int:
    """`"12.5"` or `"12.5 DATA"` → base units (18 decimals), exactly."""
    match = _AMOUNT.match(text)
    if not match:
        raise UserError(f"{what} {text!r} is not a token amount; write it like 100 or 12.5")
    try:
        value = Decimal(match.group(1)) * TOKEN
    except InvalidOperation:
        raise UserError(f"{what} {text!r} is not a token amount") from None
    if value != value.to_integral_value():
        raise UserError(f"{what} {text!r} has more than 18 decimals")
    return int(value)


def format_tokens(amount: int) -> str:
    whole, frac = divmod(amount, TOKEN)
    text = f"{whole:,}"
    if frac:
        text += "." + f"{frac:018d}".rstrip("0")
    return f"{text} DATA"


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_deadline(text: str, now: int) -> int:
    """`"90m"`, `"2h"`, `"3d"` from now, a unix time, or an ISO-8601 time → unix seconds."""
    text = text.strip()
    match = _DURATION.match(text)
    if match:
        return now + int(match.group(1)) * _UNITS[match.group(2)]
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"deadline {text!r} not understood; write a duration (90m, 2h, 3d), a unix time, "
            "or an ISO time (2026-12-01T12:00:00+00:00)"
        ) from None
    if moment.tzinfo is None:
        raise UserError(f"deadline {text!r} needs a time zone, like +00:00")
    return int(moment.timestamp())


def format_span(seconds: int) -> str:
    """`604800` → `"7 days"`, `5400` → `"1 h 30 min"`, `40` → `"40 s"`."""
    if seconds % 86_400 == 0 and seconds >= 86_400:
        days = seconds // 86_400
        return f"{days} day{'s' if days != 1 else ''}"
    parts = []
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts) or "0 s"


def format_time(unix: int) -> str:
    if unix == 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


# ---------------------------------------------------------------------------- output
def emit_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(str(c) for c in row))
    return t


@contextmanager
def step(message: str) -> Iterator[None]:
    """A spinner on stderr while a transaction is on its way (nothing when not a terminal)."""
    if err.is_terminal:
        with err.status(message):
            yield
    else:
        yield


__all__ = [
    "EXIT_ERROR",
    "EXIT_REVERTED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "MarketGroup",
    "Network",
    "Signer",
    "UserError",
    "account_options",
    "emit_json",
    "err",
    "format_time",
    "format_tokens",
    "json_option",
    "network_options",
    "out",
    "parse_deadline",
    "parse_tokens",
    "step",
    "table",
]


def int_list(text: str, minimum: int = 1, what: str = "a positive integer") -> tuple[int, ...]:
    """Comma-separated integers, each at least `minimum` (`click.BadParameter` otherwise)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < minimum:
        raise click.BadParameter(f"every value must be {what}")
    return values
