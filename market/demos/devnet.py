"""`market demo --devnet`: the demo's job on an Anvil devnet, every node its own process.

The orchestrator (this process) plays the market's users: it starts the devnet in a private
`$MARKET_HOME`, creates keystores, funds and stakes, and posts the bounty. The three heavy
nodes are `market node heavy` processes serving HTTP; each clinic is a `market node light
--once` process that reads its own CSV, applies its own policy and submits. Nothing is
simulated: the deadline is real time, so the demo waits for it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from eth_account import Account

from compute.proposal import parse_proposal
from market.chain import Chain
from market.chain.token import TokenClient
from market.demos.statistics import (
    BUDGET,
    STRICT_SHARE,
    DemoReport,
    Phase,
    _phase,
    _proposal,
    clinic_tables,
    refund_of,
    report,
    wait_fees_paid,
)
from market.escrow import EscrowClient, JobState
from market.escrow.documents import ResultDocument, fetch
from market.home import HOME_ENV, Home
from market.keys import box_public_key
from market.network import ETHER, devnet_down, devnet_up
from market.sandbox import wait_ready
from market.staking import StakingClient
from market.storage import open_storage, uri_for
from market.wallet import Wallet
from nodes.datasets import register_dataset
from nodes.jobs import job_params

MARKET = str(Path(sys.executable).with_name("market"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_devnet_demo(
    providers: int = 50,
    seed: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> DemoReport:
    if providers < 3:
        raise ValueError("the demo needs at least 3 providers (the bounty's minimum)")
    phases: list[Phase] = []
    tables = clinic_tables(np.random.default_rng(seed), providers)
    with tempfile.TemporaryDirectory(prefix="market-devnet-demo-") as tmp:
        work = Path(tmp)
        home = Home(work / "home")
        password = secrets.token_hex(16)
        env = {**os.environ, HOME_ENV: str(home.root), "MARKET_PASSWORD": password,
               "MARKET_KEYSTORE_SCRYPT_N": "4096"}  # fmt: skip
        env.pop("ETH_RPC_URL", None)
        wallet = Wallet(home.accounts, scrypt_n=4096)
        processes: list[subprocess.Popen] = []
        try:
            progress("starting Anvil and deploying the market")
            with _phase(phases, "devnet up"):
                status = devnet_up(home, _free_port())
                assert status.url is not None and status.deployment is not None
            chain = Chain.rpc(status.url)
            deployment = status.deployment
            escrow, staking = EscrowClient(chain, deployment), StakingClient(chain, deployment)
            token = TokenClient(chain, deployment.token)

            def account(alias: str, tokens: int):
                key = Account.create()
                wallet.import_private_key(alias, "0x" + bytes(key.key).hex(), password)
                chain.fund(key.address, 10 * ETHER)
                if tokens:
                    token.faucet(key, key.address, tokens)
                return key

            progress("registering three heavy nodes, each its own process")
            with _phase(phases, "heavy nodes up"):
                stake = deployment.config.min_heavy_node_stake
                committee = []
                for i in range(3):
                    node = account(f"node{i}", stake)
                    url = f"http://127.0.0.1:{_free_port()}"
                    staking.register_heavy_node(node, stake, url, box_public_key(node))
                    committee.append(node.address)
                    processes.append(subprocess.Popen(
                        [MARKET, "node", "heavy", "--account", f"node{i}", "--network", "devnet",
                         "--peer-timeout", "10"],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    ))  # fmt: skip
                committee.sort(key=lambda a: int(a, 16))
                buyer = account("buyer", BUDGET)
                # A light node skips a heavy node that does not answer yet, and the committee
                # then agrees on no dataset: wait until every heavy node serves.
                wait_serving([staking.heavy_node(m).endpoint for m in committee], processes)

            progress(f"{providers} clinics register and stake their datasets")
            strict = work / "strict-policy.json"
            strict.write_text(json.dumps({"require_dp": True}))
            with _phase(phases, "stake datasets"):
                minimum = deployment.config.min_dataset_stake
                for i, table in enumerate(tables):
                    owner = account(f"clinic{i}", minimum)
                    path = work / f"clinic{i}.csv"
                    table.to_csv(path, index=False)
                    local = register_dataset(path, f"clinic{i}", 20, home)
                    staking.stake_dataset(owner, local.dataset_id, minimum, local.metadata_uri)

            progress("posting the bounty")
            with _phase(phases, "post bounty"):
                deadline = chain.now() + 30 + providers
                terms = _proposal(len(committee), deadline, max(3, providers // 2))
                proposal = parse_proposal(terms)
                # By content address, in the store the nodes' processes read (their home's).
                spec_uri = uri_for(open_storage(home).put(proposal.canonical_bytes()))
                job_id = escrow.post_job(buyer, job_params(proposal, spec_uri))
                escrow.draw_committee(buyer, job_id)
                wait_ready(escrow, job_id, timeout=60.0)

            progress("each clinic's light node: policy, map, share, seal, submit")
            refused: dict[str, str] = {}
            with _phase(phases, "light nodes submit"):

                def light(i: int) -> list[dict]:
                    command = [MARKET, "node", "light", "--once", "--json", "--account",
                               f"clinic{i}", "--network", "devnet"]  # fmt: skip
                    if i % STRICT_SHARE == 1:
                        command += ["--policy", str(strict)]
                    done = subprocess.run(command, env=env, capture_output=True, text=True)
                    if done.returncode != 0:
                        raise RuntimeError(f"clinic{i}'s light node failed: {done.stderr}")
                    return json.loads(done.stdout)

                with ThreadPoolExecutor(max_workers=4) as pool:
                    for taken in pool.map(light, range(providers)):
                        for t in taken:
                            if t["status"] != "submitted":
                                refused[t["dataset"]] = t["reason"]

            progress("waiting for the deadline; then the committee reduces and settles")
            with _phase(phases, "deadline, reduce, finalize"):
                while time.time() <= deadline:  # the nodes' clock is the wall clock
                    time.sleep(1)
                state = _wait_settled_rpc(escrow, job_id)
            if state is not JobState.FINALIZED:
                raise RuntimeError(f"the job ended {state.name.lower()}")

            progress("clinics claim")
            with _phase(phases, "claims"):
                event = escrow.finalized_event(job_id)
                assert event is not None
                endpoints = [staking.heavy_node(m).endpoint for m in committee]
                document = ResultDocument.from_bytes(
                    fetch(event["resultURI"], endpoints), escrow.job(job_id).result_hash
                )
                tree = document.payouts
                assert tree is not None
                earnings = {}
                for i in range(providers):
                    owner = wallet.unlock(f"clinic{i}", password)
                    if owner.address in tree:
                        amount = tree.amount(owner.address)
                        escrow.claim(owner, job_id, owner.address, amount,
                                     tree.proof(owner.address))  # fmt: skip
                        earnings[owner.address] = amount
            wait_fees_paid(escrow, job_id)
            fees = {m: staking.heavy_node(m).fees_earned for m in committee}
            refund = refund_of(escrow, job_id)
        finally:
            stop_processes(processes)
            devnet_down(home)
    used = [t for i, t in enumerate(tables) if i % STRICT_SHARE != 1]
    return report(providers, refused, job_id, state, document, used, fees, earnings, refund,
                  phases)  # fmt: skip


def stop_processes(processes: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """Ask every node process to stop, then kill the ones still running after `timeout` s."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_serving(
    urls: list[str], processes: list[subprocess.Popen], timeout: float = 120.0
) -> None:
    """Until every heavy node's `/health` answers (a node process that exits fails at once)."""
    end = time.monotonic() + timeout
    for url in urls:
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a heavy node process exited while starting")
            if time.monotonic() > end:
                raise RuntimeError(f"the heavy node at {url} did not start in {timeout:.0f} s")
            time.sleep(0.2)


def _wait_settled_rpc(escrow: EscrowClient, job_id: int, timeout: float = 300.0) -> JobState:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = escrow.job_state(job_id)
        if state is not JobState.POSTED:
            return state
        time.sleep(0.5)
    raise RuntimeError(f"the committee did not settle job {job_id} within {timeout:.0f} s")
