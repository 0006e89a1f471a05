"""`market bench network`: one statistics job with N providers, from bounty posted to finalized,
through every real component, and where its time goes.

The job is the demo's (the mean of a column across clinics, Shamir 2-of-3 among three heavy
nodes). Every provider is a light node's client in this process: it checks the proposal
against its policy, runs the map on its own table, shares, seals each share to a heavy node's
key, signs it (EIP-712) and posts it, on keep-alive connections, `concurrency` providers at a
time. The heavy nodes check each submission's signatures and stake, open it, hold it durably
and answer; after the deadline they agree, reduce, sign and finalize on chain.

- `--network embedded`: the chain (py-evm), the three heavy nodes (FastAPI on loopback ports,
  a SQLite file each) and the clients all in this process. The nodes' clock is moved to the
  deadline once every provider's submissions are answered (instead of waiting for it).
- `--network anvil`: an Anvil devnet process and three `market node heavy` processes; the
  deadline is real time, `window` seconds after posting, so the job waits for it (its own
  phase, `wait_deadline`; `busy_s` is `total_s` without it).

Reported apart from the job: setup (deploying, starting the nodes, funding and staking every
provider) and the providers' claims afterwards. `per_provider_ms` divides each by N; run
several sizes to see how each grows.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests
from eth_account.signers.local import LocalAccount
from requests.adapters import HTTPAdapter

from compute.maps import run_map
from compute.policy import Policy, evaluate
from compute.proposal import Proposal, parse_proposal
from market.chain import Chain
from market.demos.statistics import (
    BUDGET,
    DemoClock,
    _proposal,
    clinic_tables,
    result_document,
    running_committee,
    wait_fees_paid,
    wait_settled,
)
from market.escrow import JobState
from market.keys import box_public_key
from market.sandbox import Sandbox
from market.storage import Storage, open_storage, uri_for
from nodes.jobs import job_params, proposal_for
from nodes.light import Directory, LightNode

NETWORKS = ("embedded", "anvil")


class _Timer:
    def __init__(self) -> None:
        self.figures: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.figures[name] = round(time.perf_counter() - start, 4)


def _session(concurrency: int) -> requests.Session:
    """One keep-alive pool shared by the clients: at most `concurrency` connections per node."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=concurrency)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def submit_all(
    market: Sandbox,
    job_id: int,
    buyer: str,
    providers: list[tuple[LocalAccount, bytes]],
    tables: list[pd.DataFrame],
    concurrency: int,
) -> int:
    """Every provider's light node, `concurrency` at a time: policy, map, share, seal, sign,
    post to each member that accepted. Returns how many providers took part."""
    view = market.escrow.job(job_id)
    seen = proposal_for(market.escrow, view)  # what a light node fetches and checks
    config = seen.round_config(str(job_id))
    directory = Directory(market.staking)
    for member in view.accepted:
        directory[member]  # noqa: B018  (read once, before the clients start)
    http = _session(concurrency)
    policy = Policy.default()

    def provide(provider: tuple[LocalAccount, bytes], table: pd.DataFrame) -> bool:
        owner, dataset_id = provider
        if evaluate(policy, seen, buyer, view.accepted).verdict != "accept":
            return False
        records, _ = run_map(seen, table)
        light = LightNode(owner, market.escrow, market.staking, http, None, directory)
        delivery = light.submit(view, config, dataset_id, records)
        if delivery.refused or delivery.unreachable:
            raise RuntimeError(f"a submission was not taken: {delivery}")
        return True

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        taken = list(pool.map(provide, providers, tables))
    http.close()
    return sum(taken)


def _claims(market: Sandbox, job_id: int, committee: list[str],
            providers: list[tuple[LocalAccount, bytes]], concurrency: int) -> float:  # fmt: skip
    """Every paid provider claims its payout, `concurrency` at a time; the seconds it took."""
    start = time.perf_counter()
    document = result_document(market, job_id, committee)
    tree = document.payouts
    assert tree is not None

    def claim(owner: LocalAccount) -> int:
        if owner.address not in tree:
            return 0
        amount = tree.amount(owner.address)
        market.escrow.claim(owner, job_id, owner.address, amount, tree.proof(owner.address))
        return amount

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        paid = sum(pool.map(claim, [o for o, _ in providers]))
    assert paid == tree.total, f"claimed {paid} of the payout tree's {tree.total}"
    return time.perf_counter() - start


def _job(
    market: Sandbox,
    buyer: LocalAccount,
    proposal: Proposal,
    storage: Storage,
    providers: list[tuple[LocalAccount, bytes]],
    tables: list[pd.DataFrame],
    concurrency: int,
    phases: _Timer,
    progress: Callable[[str], None],
    reach_deadline: Callable[[], None],
    idle: bool,
) -> tuple[int, int]:
    """Post, staff, submit, reach the deadline (its own `wait_deadline` phase when `idle`),
    reduce and finalize; the job's id and how many providers took part."""
    progress("posting; the nodes draw and accept the committee")
    with phases("post_and_staff"):
        job_id = _post(market, buyer, proposal, storage)
    progress(f"{len(providers)} light nodes submit")
    with phases("submit"):
        participants = submit_all(market, job_id, buyer.address, providers, tables, concurrency)
    if idle:
        progress("waiting for the deadline")
        with phases("wait_deadline"):
            reach_deadline()
    progress("the committee reduces and finalizes")
    with phases("reduce_and_finalize"):
        if not idle:
            reach_deadline()
        state = wait_settled(market, job_id)
    if state is not JobState.FINALIZED:
        raise RuntimeError(f"the job ended {state.name.lower()}")
    wait_fees_paid(market.escrow, job_id)
    return job_id, participants


def _post(market: Sandbox, buyer: LocalAccount, proposal: Proposal, storage: Storage) -> int:
    """Publish the proposal by content address, post it and draw its committee (as `bounty
    post` does: the buyer draws from the next block on), then wait until the nodes accept."""
    uri = uri_for(storage.put(proposal.canonical_bytes()))
    job_id = market.escrow.post_job(buyer, job_params(proposal, uri))
    market.escrow.draw_committee(buyer, job_id)
    market.wait_ready(job_id)
    return job_id


def _result(
    n: int,
    network: str,
    setup: dict[str, float],
    phases: dict[str, float],
    claims_s: float,
    participants: int,
) -> dict[str, Any]:
    total = round(sum(phases.values()), 4)
    idle = phases.get("wait_deadline", 0.0)
    per = {name: round(1000 * s / n, 3) for name, s in phases.items()}
    per["total"] = round(1000 * total / n, 3)
    per["fund_and_stake"] = round(1000 * setup["fund_and_stake"] / n, 3)
    per["claims"] = round(1000 * claims_s / n, 3)
    return {
        "providers": n,
        "network": network,
        "participants": participants,
        "state": JobState.FINALIZED.name,
        "total_s": total,
        "busy_s": round(total - idle, 4),
        "phases": phases,
        "setup": setup,
        "claims_s": round(claims_s, 4),
        "per_provider_ms": per,
    }


def run_network_bench(
    providers: int,
    network: str = "embedded",
    seed: int = 0,
    concurrency: int = 16,
    window: float | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """One job with `providers` providers; see the module docstring for what is measured."""
    if providers < 3:
        raise ValueError("the job needs at least 3 providers (its minimum)")
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}")
    tables = clinic_tables(np.random.default_rng(seed), providers)
    if network == "embedded":
        return _embedded(providers, tables, concurrency, progress)
    return _anvil(providers, tables, concurrency, window, progress)


def _embedded(
    n: int, tables: list[pd.DataFrame], concurrency: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    setup, phases = _Timer(), _Timer()
    clock = DemoClock()
    with Chain.embedded() as chain, tempfile.TemporaryDirectory(prefix="market-bench-") as tmp:
        with ExitStack() as running:
            progress("deploying the market")
            with setup("deploy"):
                market = Sandbox.deploy(chain)
                buyer = market.account(BUDGET)
            progress("starting three heavy nodes")
            with setup("heavy_nodes"):
                committee = running.enter_context(
                    running_committee(market, Path(tmp), clock, interval=0.02, poll=0.1)
                )
            progress(f"funding and staking {n} providers")
            with setup("fund_and_stake"):
                providers = market.datasets(n)
            storage = open_storage()  # where the in-process nodes fetch from
            proposal = parse_proposal(_proposal(3, chain.now() + 3_600, max(3, n // 2)))

            def deadline_now() -> None:  # the nodes' clock moved to the deadline
                clock.offset = proposal.deadline - time.time() + 1

            job_id, participants = _job(
                market, buyer, proposal, storage, providers, tables, concurrency, phases,
                progress, deadline_now, idle=False,
            )  # fmt: skip
            progress("providers claim")
            claims_s = _claims(market, job_id, committee, providers, 1)
    return _result(n, "embedded", setup.figures, phases.figures, claims_s, participants)


def _anvil(
    n: int,
    tables: list[pd.DataFrame],
    concurrency: int,
    window: float | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    from market.demos.devnet import MARKET, _free_port, stop_processes, wait_serving
    from market.home import HOME_ENV, Home
    from market.network import Network
    from market.wallet import Wallet

    setup, phases = _Timer(), _Timer()
    window = window if window is not None else 10.0 + 0.03 * n
    with tempfile.TemporaryDirectory(prefix="market-bench-") as tmp:
        home = Home(Path(tmp) / "home")
        password = secrets.token_hex(16)
        env = {**os.environ, HOME_ENV: str(home.root), "MARKET_PASSWORD": password,
               "MARKET_KEYSTORE_SCRYPT_N": "4096"}  # fmt: skip
        env.pop("ETH_RPC_URL", None)
        processes: list[subprocess.Popen] = []
        # The clients here fetch the proposal from the same home as the nodes' processes.
        previous_home = os.environ.get(HOME_ENV)
        os.environ[HOME_ENV] = str(home.root)
        running = ExitStack()
        running.callback(_restore_env, HOME_ENV, previous_home)
        with running, Chain.anvil() as chain:
            try:
                progress("deploying the market on Anvil")
                with setup("deploy"):
                    market = Sandbox.deploy(chain)
                    buyer = market.account(BUDGET)
                    rpc_url = chain.web3.provider.endpoint_uri  # type: ignore[attr-defined]
                    record = home.networks / f"chain-{chain.chain_id}.json"
                    Network("bench", chain, home, record).save_deployment(market.deployment)
                progress("starting three heavy nodes, each its own process")
                with setup("heavy_nodes"):
                    wallet = Wallet(home.accounts, scrypt_n=4096)
                    stake = market.config.min_heavy_node_stake
                    committee = []
                    for i in range(3):
                        node = market.account(stake)
                        wallet.import_private_key(f"node{i}", "0x" + bytes(node.key).hex(),
                                                  password)  # fmt: skip
                        url = f"http://127.0.0.1:{_free_port()}"
                        market.staking.register_heavy_node(node, stake, url, box_public_key(node))
                        committee.append(node.address)
                        processes.append(subprocess.Popen(
                            [MARKET, "node", "heavy", "--account", f"node{i}", "--rpc-url",
                             rpc_url, "--peer-timeout", "10", "--interval", "0.02",
                             "--poll", "0.05"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        ))  # fmt: skip
                    committee.sort(key=lambda a: int(a, 16))
                    wait_serving([market.staking.heavy_node(m).endpoint for m in committee],
                                 processes)  # fmt: skip
                progress(f"funding and staking {n} providers")
                with setup("fund_and_stake"):
                    providers = market.datasets(n, workers=8)
                storage = open_storage(home)

                deadline = chain.now() + int(window) + 1
                proposal = parse_proposal(_proposal(3, deadline, max(3, n // 2)))

                def wait_deadline() -> None:  # the nodes' clock is the wall clock
                    while time.time() <= deadline:
                        time.sleep(0.01)

                job_id, participants = _job(
                    market, buyer, proposal, storage, providers, tables, concurrency, phases,
                    progress, wait_deadline, idle=True,
                )  # fmt: skip
                progress("providers claim")
                claims_s = _claims(market, job_id, committee, providers, 8)
            finally:
                stop_processes(processes)
    return _result(n, "anvil", setup.figures, phases.figures, claims_s, participants)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def format_network_table(results: list[dict[str, Any]]) -> str:
    """Each run's phases in seconds and per provider, side by side."""
    names = list(dict.fromkeys(k for r in results for k in r["phases"]))
    head = f"{'providers':>10} {'network':>9} {'total s':>9} " + " ".join(f"{n:>20}" for n in names)
    lines = [head + f" {'setup s':>9} {'claims s':>9}"]
    for r in results:
        cells = " ".join(
            f"{r['phases'].get(n, 0):>9.3f} ({r['per_provider_ms'].get(n, 0):>6.2f}ms)"
            for n in names
        )
        lines.append(
            f"{r['providers']:>10} {r['network']:>9} {r['total_s']:>9.3f} {cells} "
            f"{sum(r['setup'].values()):>9.2f} {r['claims_s']:>9.2f}"
        )
    lines.append("(phase seconds, and in brackets milliseconds per provider)")
    return "\n".join(lines)
