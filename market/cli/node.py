"""`market node heavy | light | approvals | approve`: run the nodes as long-lived processes."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from compute.kinds import KINDS
from market.cli.common import (
    Signer,
    UserError,
    account_options,
    emit_json,
    err,
    json_option,
    network_options,
    out,
    parse_tokens,
    table,
)
from market.escrow import EscrowClient
from market.home import Home
from market.staking import StakingClient
from nodes.datasets import LocalDataset, read_table, registered_datasets

Net = Callable[[], Any]


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def allow_fetch_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--allow-fetch SCHEME` (repeatable): URI schemes besides ipfs:// and data: by which this
    node fetches the documents a buyer names."""
    return click.option(
        "--allow-fetch",
        "allow_fetch",
        multiple=True,
        type=click.Choice(["http", "https", "file"]),
        help="Also fetch job proposals and blobs by this URI scheme; repeat for several. By "
        "default only content-addressed ipfs:// URIs (checked against their address) and "
        "inline data: URIs are fetched. With http/https any buyer can make this node request "
        "any URL it can reach, internal services included; with file, read any file this "
        "process can: allow them only where you trust every buyer.",
    )(f)


@click.group("node")
def node_group() -> None:
    """Run a heavy node (HTTP service) or a light node (provider), and approve jobs."""


@node_group.command("heavy")
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Default: the port of the registered endpoint.",
)
@click.option("--peer-timeout", default=30.0, show_default=True, help="Seconds to wait for peers.")
@click.option(
    "--interval",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0.01, 60),
    help="Seconds between passes over the node's jobs (deadlines, peers, settlement).",
)
@click.option(
    "--poll",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05, 600),
    help="Seconds between looks at the chain for new jobs to draw and accept.",
)
@click.option(
    "--min-fee",
    default="0",
    show_default=True,
    help="Accept only jobs whose fee share for this node is at least this many DATA.",
)
@allow_fetch_option
@network_options
@account_options
def node_heavy(
    port: int | None,
    peer_timeout: float,
    interval: float,
    poll: float,
    min_fee: str,
    allow_fetch: tuple[str, ...],
    network: Net,
    signer: Signer,
) -> None:
    """Serve as the registered heavy node --account until interrupted (Ctrl-C).

    When the contract draws it for a job, the node accepts the job on chain if it can serve it
    and its fee share is at least --min-fee; it is never penalized for a job it did not accept.
    It fetches a job's proposal only once it is drawn for the job, never because of a request;
    by content address (ipfs://) or data: URI unless --allow-fetch says more."""
    from nodes.heavy import HeavyNode
    from nodes.jobs import JobSpecs
    from nodes.service import Server, create_app
    from nodes.store import Store

    least = parse_tokens(min_fee, "--min-fee")
    with network() as net:
        account = signer.unlock()
        staking = StakingClient(net.chain, net.deployment)
        record = staking.heavy_node(account.address)
        if not record.registered:
            raise UserError(
                f"{account.address} is not a registered heavy node: "
                "`market heavy register --endpoint URL --stake AMOUNT` first"
            )
        if port is None:
            port = int(record.endpoint.rstrip("/").rsplit(":", 1)[-1])
        _require_free_port(port, record.endpoint)
        escrow = EscrowClient(net.chain, net.deployment)
        store = Store(Home.default().dir("heavy") / f"{signer.alias}.db")
        specs = JobSpecs(escrow, allow=allow_fetch)
        node = HeavyNode(account, net.chain, net.deployment, store, specs,
                         valuation_for=specs.valuation, peer_timeout=peer_timeout,
                         min_fee=least, discover_every=poll)  # fmt: skip
        server = Server(create_app(node), port=port)
        try:
            url = server.start()
        except RuntimeError:  # the port was taken after the check
            raise UserError(f"the node could not listen on port {port}; see above") from None
        node.start(interval=interval)
        err.print(f"heavy node {account.address} serving at {url} (registered {record.endpoint})")
        _log_to_stderr()
        try:
            _wait_for_signal()
        finally:
            node.stop()
            server.stop()
            store.close()


def _require_free_port(port: int, endpoint: str) -> None:
    """A one-line error, before anything is opened, when another process holds `port`."""
    import errno
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise UserError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
            raise UserError(
                f"port {port} is already in use by another process (the node's registered "
                f"endpoint is {endpoint}): stop that process, or serve on a free port with "
                "--port PORT and have the endpoint reach it; register new nodes with an "
                "--endpoint on a free port"
            ) from None


def _log_to_stderr() -> None:
    """The nodes' own log lines (every job seen, decision, submission, agreement, settlement,
    payout) on stderr with UTC times; other libraries' warnings only."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    market = logging.getLogger("market")
    market.addHandler(handler)
    market.setLevel(logging.INFO)
    market.propagate = False


def _light_state(alias: str) -> Any:
    from nodes.light import LightState

    return LightState(str(Home.default().dir("light") / f"{alias}.db"))


def _local_data(d: LocalDataset) -> Any:
    """What the light node serves for a registered dataset: a table's loader, or a model's
    (loaded from the operator's own registered file when a job needs it)."""
    from nodes.evalset import load_model
    from nodes.light import LocalData

    if d.model is not None:
        return LocalData(d.dataset_id, None, model=load_model(d.path), name=d.name)
    # The dp mock data's (epsilon, delta), when its owner chose it: the ledger's first spend.
    return LocalData(d.dataset_id, lambda: read_table(d.path), mock_spend=d.mock_spend, name=d.name)


@node_group.command("light")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The provider's privacy policy (JSON); default: aggregates only, at least 3 "
    "participants, no slashing.",
)
@click.option("--once", is_flag=True, help="One pass over open jobs, then exit.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between passes.")
@allow_fetch_option
@network_options
@account_options
@json_option
def node_light(
    policy_file: Path | None,
    once: bool,
    interval: float,
    allow_fetch: tuple[str, ...],
    network: Net,
    signer: Signer,
    as_json: bool,
) -> None:
    """Serve the account's staked datasets: for each open job, apply the policy, run the map
    locally and submit sealed shares to the committee.

    A model dataset (`market dataset register MODEL.joblib`) takes part in ensemble jobs: the
    node runs the model on the job's public evaluation set and shares its class probabilities;
    the model never leaves this machine. The default policy takes aggregates only: allow
    ensembles with a --policy whose allowed_kinds lists "ensemble".

    A job's proposal and blobs are fetched by content address (ipfs://) or data: URI; a job
    naming another scheme is refused unless --allow-fetch allows it."""
    from compute.policy import Policy, PolicyError, parse_policy
    from nodes.light import LightNode, LightService
    from nodes.valuation import BlobCache

    try:
        policy = parse_policy(policy_file.read_bytes()) if policy_file else Policy.default()
    except PolicyError as exc:
        raise UserError(f"{policy_file}: {exc}") from None
    with network() as net:
        account = signer.unlock()
        escrow = EscrowClient(net.chain, net.deployment)
        staking = StakingClient(net.chain, net.deployment)

        def staked_here() -> list[LocalDataset]:
            mine = {r.dataset_id for r in staking.datasets_of(account.address)}
            return [d for d in registered_datasets() if d.dataset_id in mine]

        served = staked_here()
        if not served:
            raise UserError(
                f"{account.address} has no staked dataset registered on this machine: "
                "`market dataset register PATH` then `market dataset stake`"
            )
        datasets = [_local_data(d) for d in served]
        model_kinds = [k.name for k in KINDS.values() if k.dataset == "model"]
        allowed = set(model_kinds) & set(policy.allowed_kinds)
        if any(d.model is not None for d in served) and model_kinds and not allowed:
            err.print(
                f"note: the policy does not allow {' or '.join(model_kinds)} jobs, so the model "
                f'datasets take part in none; add "{model_kinds[0]}" to the policy\'s '
                "allowed_kinds (--policy FILE)",
                highlight=False,
            )
        service = LightService(
            LightNode(account, escrow, staking), datasets, policy, _light_state(signer.alias),
            blobs=BlobCache(allow_fetch),
            refresh=None if once else lambda: [_local_data(d) for d in staked_here()],
        )  # fmt: skip
        if not once:  # a long-running node says what it does on stderr (its log)
            _log_to_stderr()
            err.print(f"light node {account.address} serving "
                      f"{', '.join(d.name for d in served)}", highlight=False)  # fmt: skip
        stop = threading.Event()
        if not once:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        decisions = []
        # With --once, a job whose drawn committee is still accepting is waited for (at most
        # until its acceptance window closes): its shares go only to members that accepted.
        wait_until = None
        while True:
            taken = service.poll()
            decisions.extend(taken)
            if once and not as_json:
                for job, dataset, status, reason in taken:
                    out.print(f"job {job}, dataset {dataset[:10]}…: {status} ({reason})")
            if once and service.staffing:
                if wait_until is None:
                    left = max(service.staffing.values()) - net.chain.clock()
                    wait_until = time.monotonic() + max(left, 0) + 5
                    err.print(f"waiting for the committees of jobs {sorted(service.staffing)} "
                              "to accept", highlight=False)  # fmt: skip
                if time.monotonic() < wait_until and not stop.wait(min(interval, 1.0)):
                    continue
            if once or stop.wait(interval):
                break
    if as_json:
        emit_json([{"job": j, "dataset": d, "status": s, "reason": r} for j, d, s, r in decisions])


@node_group.command("approvals")
@click.option("--account", "alias", envvar="MARKET_ACCOUNT", required=True)
@json_option
def node_approvals(alias: str, as_json: bool) -> None:
    """Jobs waiting for the operator's approval (policy with manual_approval)."""
    rows = _light_state(alias).all("awaiting approval")
    if as_json:
        emit_json([{"job": j, "dataset": d} for j, d, _, _ in rows])
    elif not rows:
        out.print("nothing awaits approval")
    else:
        out.print(table("Awaiting approval", ["job", "dataset"], [[j, d] for j, d, _, _ in rows]))


@node_group.command("approve")
@click.argument("job_id", type=int)
@click.option("--account", "alias", envvar="MARKET_ACCOUNT", required=True)
@json_option
def node_approve(job_id: int, alias: str, as_json: bool) -> None:
    """Approve JOB_ID: the light node submits for it on its next pass."""
    state = _light_state(alias)
    waiting = [(j, d) for j, d, _, _ in state.all("awaiting approval") if j == job_id]
    if not waiting:
        refused = [(d, r) for j, d, _, r in state.all("refused") if j == job_id]
        if refused:
            raise UserError(
                f"job {job_id} is not awaiting approval: the policy refused it ({refused[0][1]}); "
                "to reconsider it, change the policy and run `market node light --policy FILE` "
                "again: a job refused under another policy is decided afresh while it is open"
            )
        raise UserError(f"job {job_id} is not awaiting approval (`market node approvals`)")
    for job, dataset in waiting:
        state.set(job, dataset, "approved", "approved by the operator")
    if as_json:
        emit_json([{"job": j, "dataset": d, "status": "approved"} for j, d in waiting])
    else:
        out.print(f"approved job {job_id} for {len(waiting)} dataset(s)")
