"""What every `market` command shares: options for the network and the account, amounts and
times as people write them, output as tables or JSON, and one-line errors with stable exit
codes."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import requests
from eth_account.signers.local import LocalAccount
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.table import Table

from market.chain import TOKEN, ChainConnectionError, ChainError, ContractRevert
from market.chain import errors as E
from market.chain.token import TokenClient
from market.chain.units import format_tokens, format_utc
from market.escrow import EscrowClient, JobState, JobView
from market.escrow.documents import DocumentError, ResultDocument, fetch
from market.home import Home
from market.network import NETWORKS, RPC_ENV, Network, open_network
from market.staking import StakingClient
from market.wallet import Wallet, WalletError, resolve_password
from nodes.datasets import DatasetError, LocalDataset, registered_datasets

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
PASSWORD_FILE_ENV = "MARKET_PASSWORD_FILE"

err = Console(stderr=True)
out = Console(soft_wrap=True)
"""Standard output: lines are never broken by the console (an address stays whole when
piped or in a narrow terminal); tables size themselves (`table`)."""

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """A problem the user can fix; shown as one line, exit code 1."""

    exit_code = EXIT_ERROR

    def show(self, file: Any = None) -> None:
        fail_line(self.message)


class BadValue(UserError):
    """An option's value that is malformed (an amount of -5, a deadline of "soon"): a
    malformed command line, shown as one line, exit code 2."""

    exit_code = EXIT_USAGE


def fail_line(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


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


def revert_hint(exc: ContractRevert) -> str | None:
    """What to do about a custom error people run into (None when there is nothing to add)."""
    if exc.error_name == "MarketplaceDeadlineOutOfRange" and {"earliest", "latest"} <= set(
        exc.values
    ):
        # The contract takes deadlines in [block.timestamp + 1, block.timestamp + window].
        window = int(exc.values["latest"]) - int(exc.values["earliest"]) + 1
        return (
            "the deadline must be after the posting block and at most this market's maximum "
            f"job window of {format_span(window)} after it; choose another --deadline"
        )
    return REVERT_HINTS.get(exc.error_name)


_UNREACHABLE = (ChainConnectionError, ConnectionError, requests.ConnectionError, requests.Timeout)
"""What a node that does not answer surfaces as: our own error, or web3's and the HTTP
client's when a node dies between two requests of a command."""


def _unreachable_message(exc: BaseException) -> str:
    if isinstance(exc, requests.RequestException):
        url = getattr(exc.request, "url", None) or "the node"
        return (
            f"{url} stopped answering ({type(exc).__name__}); check that the node still runs "
            "(`market devnet status` for the devnet)"
        )
    return str(exc)


class MarketGroup(click.Group):
    """Turns the errors a user can cause into one line on stderr and a stable exit code:
    with `--json` on the command line, that line is `{"error": ..., "code": ...}`."""

    json_errors = False

    def main(self, args: Any = None, *rest: Any, **options: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        given = argv[: argv.index("--")] if "--" in argv else argv
        self.json_errors = "--json" in given
        return super().main(args, *rest, **options)

    def make_context(self, *args: Any, **options: Any) -> click.Context:
        try:
            return super().make_context(*args, **options)
        except click.ClickException as exc:  # a malformed `market` option itself
            if not self.json_errors:
                raise
            self._fail(exc.format_message(), exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:  # UserError, and click's own usage errors
            if not self.json_errors:
                raise
            self._fail(exc.format_message(), exc.exit_code)
        except BrokenPipeError:  # stdout closed by a reader (`| head`): not the network
            raise
        except ContractRevert as exc:
            hint = revert_hint(exc)
            self._fail(f"transaction reverted: {exc}" + (f" ({hint})" if hint else ""),
                       EXIT_REVERTED)  # fmt: skip
        except _UNREACHABLE as exc:
            self._fail(f"network unreachable: {_unreachable_message(exc)}", EXIT_UNREACHABLE)
        except (ChainError, WalletError, DatasetError, DocumentError) as exc:
            self._fail(str(exc), EXIT_ERROR)

    def _fail(self, message: str, code: int) -> NoReturn:
        if self.json_errors:
            click.echo(json.dumps({"error": message, "code": code}), err=True)
        else:
            fail_line(message)
        sys.exit(code)


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
        return fn(*args, network=lambda: _recorded(network_name, rpc_url), **kwargs)

    return wrapper  # type: ignore[return-value]


_SENDS = "market.sends"
_SENT = "market.sent"


@contextmanager
def _recorded(network_name: str, rpc_url: str | None) -> Iterator[Network]:
    """The network, with the transactions the command mines on it recorded (`emit_json`)."""
    with open_network(Home.default(), network_name, rpc_url) as net:
        with net.chain.recording() as receipts:
            ctx = click.get_current_context(silent=True)
            if ctx is not None:
                ctx.meta.setdefault(_SENT, []).append(receipts)  # read live by `emit_json`
            yield net


def sends_transactions() -> None:
    """Mark the running command as one that sends transactions: its `--json` output carries
    their hashes (`tx_hashes`). Commands with `--account` are marked already."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_SENDS] = True


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
        envvar=PASSWORD_FILE_ENV,
        help=f"File whose first line is the password (also ${PASSWORD_FILE_ENV}; else "
        f"${PASSWORD_ENV}, else a prompt in a terminal).",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, alias: str, password_file: Path | None, **kwargs: Any) -> Any:
        sends_transactions()
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
        raise BadValue(f"{what} {text!r} is not a token amount; write it like 100 or 12.5")
    try:
        value = Decimal(match.group(1)) * TOKEN
    except InvalidOperation:
        raise BadValue(f"{what} {text!r} is not a token amount") from None
    if value != value.to_integral_value():
        raise BadValue(f"{what} {text!r} has more than 18 decimals")
    return int(value)


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
        raise BadValue(
            f"deadline {text!r} not understood; write a duration (90m, 2h, 3d), a unix time, "
            "or an ISO time (2026-12-01T12:00:00+00:00)"
        ) from None
    if moment.tzinfo is None:
        raise BadValue(f"deadline {text!r} needs a time zone, like +00:00")
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
    return "-" if unix == 0 else format_utc(unix)


# ---------------------------------------------------------------------------- output
def emit_json(value: object) -> None:
    """Print `value` as JSON; a command that sends transactions (`sends_transactions`) adds
    `tx_hashes` to its object: the hash of every transaction it mined, in order."""
    ctx = click.get_current_context(silent=True)
    if isinstance(value, dict) and ctx is not None and ctx.meta.get(_SENDS):
        sent = [r.tx_hash for receipts in ctx.meta.get(_SENT, []) for r in receipts]
        value = {**value, "tx_hashes": sent}
    click.echo(json.dumps(value, indent=2, default=str))


class WholeTable(Table):
    """A table that never breaks a word: a column of single words (addresses, hashes, URLs,
    numbers) never wraps, and the table is drawn wider than the console rather than fold one
    (a terminal wraps the long line as a whole). Piped, it keeps its natural width."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        unbounded = options.update_width(1_000_000)
        widths = [self._measure_column(console, unbounded, c) for c in self.columns]
        least = (lambda m: m.minimum) if console.is_terminal else (lambda m: m.maximum)
        need = sum(least(m) for m in widths) + self._extra_width
        if need > options.max_width:
            options = options.update_width(need)
        yield from super().__rich_console__(console, options)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    cells = [[str(c) for c in row] for row in rows]
    t = WholeTable(title=title, title_justify="left", show_header=any(columns))
    for i, column in enumerate(columns):
        words = all(not any(ch.isspace() for ch in row[i]) for row in cells if i < len(row))
        t.add_column(column, overflow="fold", no_wrap=words)
    for row in cells:
        t.add_row(*row)
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
    "BadValue",
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
    "sends_transactions",
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


# ------------------------------------------------------------- the chain, jobs, datasets
Net = Callable[[], Any]
"""What `network_options` passes a command: call it to open the network."""


def clients(net: Any) -> tuple[EscrowClient, StakingClient, TokenClient]:
    deployment = net.deployment
    return (
        EscrowClient(net.chain, deployment),
        StakingClient(net.chain, deployment),
        TokenClient(net.chain, deployment.token),
    )


def require_funds(token: TokenClient, address: str, amount: int, what: str) -> None:
    held = token.balance_of(address)
    if held < amount:
        raise UserError(
            f"{what} of {format_tokens(amount)} is more than the {format_tokens(held)} that "
            f"{address} holds; get more DATA (`market faucet` on a devnet) or ask for less"
        )


def received(token: TokenClient, address: str, withdraw: Callable[[], object]) -> int:
    """Run a withdrawal and return how many tokens it paid `address`."""
    before = token.balance_of(address)
    with step("withdrawing"):
        withdraw()
    return token.balance_of(address) - before


def existing_job(escrow: EscrowClient, job_id: int) -> JobView:
    """The job, or a `UserError` saying there is none."""
    try:
        view = escrow.job(job_id)
    except E.MarketplaceJobNotFound:
        view = None
    if view is None or view.state is JobState.NONE:
        raise UserError(f"there is no job {job_id} (`market bounty list` shows the jobs)")
    return view


def result_document(staking: StakingClient, view: JobView, uri: str) -> ResultDocument:
    endpoints = [staking.heavy_node(member).endpoint for member in view.committee]
    try:
        return ResultDocument.from_bytes(fetch(uri, endpoints), view.result_hash)
    except DocumentError as exc:
        raise UserError(f"the job's result document at {uri}: {exc}") from None


def local_dataset(dataset: str) -> LocalDataset:
    for d in registered_datasets():
        if d.dataset_id.hex() == dataset.removeprefix("0x").lower() or d.name == dataset:
            return d
    raise UserError(
        f"no registered dataset {dataset!r} (`market dataset list` shows them; "
        "`market dataset register PATH` adds one)"
    )
