"""`market demo`: one statistics bounty from posting to claims, through the real node code.

A buyer wants the mean systolic blood pressure across N clinics without any clinic revealing
its records. On the embedded chain (no other process), the demo deploys the market, starts three
heavy nodes (the FastAPI service, each on its own loopback port, each with its own SQLite file)
that register on chain with their endpoints and encryption keys, stakes N clinics' datasets,
and posts the bounty: a proposal (content-addressed; its hash is the job's `specHash`) with the
budget escrowed. Each clinic's light node checks the proposal against its own privacy policy
(a few clinics demand differential privacy and refuse), runs the vetted map on its own table,
Shamir-shares the result (2 of 3), seals each share to one heavy node's key and posts it signed.
The demo then moves the nodes' clock past the deadline (instead of waiting); the committee
agrees on the participants, reconstructs only the aggregate, signs the result and finalizes on
chain; every clinic claims its payout from the published payout tree.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests

from compute.maps import run_map
from compute.policy import Policy, evaluate
from compute.proposal import parse_proposal
from market.chain import TOKEN, Chain
from market.escrow import EscrowClient, JobState
from market.escrow.documents import ResultDocument, fetch
from market.keys import box_public_key
from market.sandbox import Sandbox
from nodes.heavy import HeavyNode
from nodes.jobs import JobSpecs, proposal_for
from nodes.light import Directory, LightNode
from nodes.service import Server, create_app
from nodes.store import Store

LO, HI = 60.0, 220.0
BUDGET = 1_000 * TOKEN
FEE_BPS = 1_000
STRICT_SHARE = 10
"""One clinic in this many demands differential privacy, and so refuses the bounty."""


@dataclass
class Phase:
    name: str
    seconds: float


@dataclass
class DemoReport:
    providers: int
    participants: int
    refused: dict[str, str]
    """Dataset id → the policy's reason, for clinics that declined."""
    job_id: int
    state: JobState
    secure_mean: float
    plain_mean: float
    records: int
    clipped: int
    """Values outside the proposal's bounds, counted under sharing (the committee's total)."""
    plain_clipped: int
    """The same count over the plaintext tables that took part."""
    budget: int
    fee_per_node: dict[str, int]
    earnings: dict[str, int]
    """What each participating clinic claimed, by address."""
    refund: int
    phases: list[Phase] = field(default_factory=list)

    @property
    def error(self) -> float:
        return abs(self.secure_mean - self.plain_mean)


class DemoClock:
    """The nodes' clock: real time, moved forward past the deadline on demand."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def clinic_tables(rng: np.random.Generator, providers: int) -> list[pd.DataFrame]:
    """Each clinic's local table: its own size and patient mix, a few data-entry errors."""
    tables = []
    for _ in range(providers):
        size = int(rng.integers(20, 400))
        bp = rng.normal(rng.normal(128.0, 8.0), 15.0, size)
        bp[rng.random(size) < 0.01] = 999.0  # clipped by the proposal's bounds
        tables.append(pd.DataFrame({"age": rng.integers(18, 90, size), "systolic_bp": bp}))
    return tables


@contextmanager
def _phase(phases: list[Phase], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    phases.append(Phase(name, time.perf_counter() - start))


def _proposal(committee_size: int, deadline: int, min_participants: int) -> dict:
    return {
        "version": 1,
        "kind": "aggregate",
        "title": "Mean systolic blood pressure across clinics",
        "map": {
            "function": "column_values",
            "params": {},
            "output": {"fields": [{"name": "systolic_bp", "lo": LO, "hi": HI}]},
            "filter": None,
        },
        "reduce": {
            "op": "mean",
            "scheme": "shamir",
            "threshold": 2,
            "threat_model": "malicious-detect",
            "bins": None,
        },  # fmt: skip
        "privacy": {"min_participants": min_participants, "dp": None},
        "economics": {
            "budget": BUDGET,
            "fee_bps": FEE_BPS,
            "payout_rule": "equal",
            "max_slash_bps": 0,
        },  # fmt: skip
        "deadline": deadline,
        "committee_size": committee_size,
        "quorum": 2,
    }


def run_demo(
    chain: Chain,
    providers: int = 50,
    seed: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
    workdir: Path | None = None,
) -> DemoReport:
    if providers < 3:
        raise ValueError("the demo needs at least 3 providers (the bounty's minimum)")
    phases: list[Phase] = []
    rng = np.random.default_rng(seed)
    tables = clinic_tables(rng, providers)
    with tempfile.TemporaryDirectory(prefix="market-demo-") as tmp:
        work = workdir or Path(tmp)
        clock = DemoClock()
        with ExitStack() as running:
            progress("deploying the market and starting three heavy nodes")
            with _phase(phases, "deploy, start heavy nodes"):
                market = Sandbox.deploy(chain)
                committee = running.enter_context(running_committee(market, work, clock))
                buyer = market.account(BUDGET)

            progress(f"staking {providers} clinics' datasets")
            with _phase(phases, "stake datasets"):
                clinics = [market.dataset() for _ in range(providers)]
                policies = [
                    Policy.default().model_copy(update={"require_dp": i % STRICT_SHARE == 1})
                    for i in range(providers)
                ]

            progress("posting the bounty")
            with _phase(phases, "post bounty"):
                deadline = chain.now() + 3_600
                terms = _proposal(len(committee), deadline, max(3, providers // 2))
                proposal = parse_proposal(terms)
                # Published by content address; the contract draws the committee and the
                # heavy nodes accept it before any clinic sends a share.
                view = market.post_proposal(buyer, proposal)
                job_id = view.job_id

            progress("light nodes: policy, map, share, seal, submit")
            refused: dict[str, str] = {}
            used: list[pd.DataFrame] = []
            with _phase(phases, "light nodes submit"):
                seen = proposal_for(market.escrow, view)  # what a light node fetches
                config = seen.round_config(str(job_id))
                directory = Directory(market.staking)
                http = requests.Session()

                def provide(clinic: tuple, table: pd.DataFrame, policy: Policy) -> None:
                    (owner, dataset_id) = clinic
                    decision = evaluate(policy, seen, buyer.address, view.accepted)
                    if decision.verdict != "accept":
                        refused["0x" + dataset_id.hex()] = "; ".join(decision.reasons)
                        return
                    records, _ = run_map(seen, table)
                    light = LightNode(owner, market.escrow, market.staking, http, None, directory)
                    light.submit(view, config, dataset_id, records)
                    used.append(table)

                # Clinics act independently: several submit at once, as they would.
                with ThreadPoolExecutor(max_workers=8) as pool:
                    for done in [
                        pool.submit(provide, *args)
                        for args in zip(clinics, tables, policies, strict=True)
                    ]:
                        done.result()

            progress("the committee reduces and settles after the deadline")
            with _phase(phases, "secure reduce + finalize"):
                state = settle(market, clock, job_id, deadline)

            progress("clinics claim their payouts")
            with _phase(phases, "claims"):
                document = result_document(market, job_id, committee)
                tree = document.payouts
                assert tree is not None
                earnings: dict[str, int] = {}
                for owner, _ in clinics:
                    if owner.address in tree:
                        amount = tree.amount(owner.address)
                        market.escrow.claim(owner, job_id, owner.address, amount,
                                            tree.proof(owner.address))  # fmt: skip
                        earnings[owner.address] = amount
    market.assert_accounting()
    fees = {m: market.staking.heavy_node(m).fees_earned for m in committee}
    refund = refund_of(market.escrow, job_id)
    return report(providers, refused, job_id, state, document, used, fees, earnings, refund,
                  phases)  # fmt: skip


def report(
    providers: int,
    refused: dict[str, str],
    job_id: int,
    state: JobState,
    document: ResultDocument,
    used: list[pd.DataFrame],
    fees: dict[str, int],
    earnings: dict[str, int],
    refund: int,
    phases: list[Phase],
) -> DemoReport:
    """The demo's report, with the plaintext mean of the tables that took part beside the
    secure result."""
    assert document.payouts is not None
    raw = np.concatenate([t["systolic_bp"].to_numpy() for t in used])
    values = np.clip(raw, LO, HI)
    return DemoReport(
        providers=providers,
        participants=len(document.result["participants"]),
        refused=refused,
        job_id=job_id,
        state=state,
        secure_mean=float(document.result["values"][0]),
        plain_mean=float(values.mean()),
        records=int(document.result["count"]),
        clipped=int(document.result.get("clipped") or 0),
        plain_clipped=int(((raw < LO) | (raw > HI)).sum()),
        budget=BUDGET,
        fee_per_node=fees,
        earnings=earnings,
        refund=refund,
        phases=phases,
    )


@contextmanager
def running_committee(
    market: Sandbox, work: Path, clock: DemoClock, interval: float = 0.1, poll: float = 1.0
) -> Iterator[list[str]]:
    """Three heavy nodes (the FastAPI service on loopback ports, a SQLite file each in `work`),
    registered on chain, each passing over its jobs every `interval` seconds and looking for
    new ones every `poll`; yields the committee's addresses in the contract's order."""
    stake = market.config.min_heavy_node_stake
    nodes: list[HeavyNode] = []
    servers: list[Server] = []
    try:
        for i in range(3):
            account = market.account(stake)
            specs = JobSpecs(market.escrow)
            node = HeavyNode(account, market.chain, market.deployment,
                             Store(work / f"heavy-{i}.db"), specs, valuation_for=specs.valuation,
                             clock=clock, peer_timeout=5.0, discover_every=poll)  # fmt: skip
            server = Server(create_app(node))
            servers.append(server)
            url = server.start()
            market.staking.register_heavy_node(account, stake, url, box_public_key(account))
            node.start(interval=interval)
            nodes.append(node)
        yield sorted((n.address for n in nodes), key=lambda a: int(a, 16))
    finally:
        for node in nodes:
            node.stop()
        for server in servers:
            server.stop()


def settle(market: Sandbox, clock: DemoClock, job_id: int, deadline: int) -> JobState:
    """Move the nodes' clock past the deadline and wait until the committee finalized."""
    clock.offset = deadline - time.time() + 1
    state = wait_settled(market, job_id)
    if state is not JobState.FINALIZED:
        raise RuntimeError(f"the job ended {state.name.lower()}")
    wait_fees_paid(market.escrow, job_id)
    return state


def wait_fees_paid(escrow: EscrowClient, job_id: int, timeout: float = 60.0) -> None:
    """Wait until every accepted member of a finalized job holds its fee share: a member left
    out of the `finalize` call claims its own right after (`claimFee`)."""
    limit = time.monotonic() + timeout
    while escrow.job(job_id).fee_held:
        if time.monotonic() > limit:
            raise RuntimeError(f"job {job_id}'s fees were not all claimed in {timeout:.0f} s")
        time.sleep(0.1)


def refund_of(escrow: EscrowClient, job_id: int) -> int:
    """What the buyer got back when the job was finalized (the contract's own figure)."""
    event = escrow.finalized_event(job_id)
    assert event is not None, f"job {job_id} is not finalized"
    return int(event["refund"])


def result_document(market: Sandbox, job_id: int, committee: list[str]) -> ResultDocument:
    """The finalized job's result document, from its committee, checked against the chain."""
    event = market.escrow.finalized_event(job_id)
    assert event is not None
    endpoints = [market.staking.heavy_node(m).endpoint for m in committee]
    return ResultDocument.from_bytes(
        fetch(event["resultURI"], endpoints), market.escrow.job(job_id).result_hash
    )


def wait_settled(market: Sandbox, job_id: int, timeout: float = 300.0) -> JobState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = market.escrow.job_state(job_id)
        if state is not JobState.POSTED:
            return state
        time.sleep(0.1)
    raise RuntimeError(f"the committee did not settle job {job_id} within {timeout:.0f} s")


def format_report(report: DemoReport) -> list[Any]:
    """What `market demo` prints: lines (rich markup) and tables."""
    from rich.table import Table

    lines: list[Any] = []
    lines.append(
        f"[bold]Job {report.job_id}[/]: mean systolic blood pressure, {report.participants} of "
        f"{report.providers} clinics, {report.records:,} records, "
        f"state [bold]{report.state.name}[/]"
    )
    lines.append(
        f"  secure result {report.secure_mean:.6f}   plaintext {report.plain_mean:.6f}   "
        f"difference {report.error:.2e}"
    )
    lines.append(
        f"  {report.clipped} values outside the proposal's bounds were clipped, counted under "
        f"sharing (plaintext count {report.plain_clipped})"
    )
    if report.refused:
        reason = next(iter(report.refused.values()))
        lines.append(f"  {len(report.refused)} clinics declined under their policy ({reason})")
    money = Table(title="Who earned what (DATA)", show_lines=False)
    money.add_column("party")
    money.add_column("role")
    money.add_column("amount", justify="right")
    for node, fee in report.fee_per_node.items():
        money.add_row(node, "heavy node fee", _tokens(fee))
    earnings: Sequence[tuple[str, int]] = list(report.earnings.items())
    shown = earnings[:5]
    for account, amount in shown:
        money.add_row(account, "provider payout", _tokens(amount))
    if len(earnings) > len(shown):
        rest = sum(a for _, a in earnings[len(shown) :])
        money.add_row(f"... {len(earnings) - len(shown)} more providers", "", _tokens(rest))
    money.add_row("buyer", "refund", _tokens(report.refund))
    money.add_row("[bold]total", "", f"[bold]{_tokens(report.budget)}")
    lines.append(money)
    times = Table(title="Phases")
    times.add_column("phase")
    times.add_column("seconds", justify="right")
    for phase in report.phases:
        times.add_row(phase.name, f"{phase.seconds:.2f}")
    lines.append(times)
    return lines


def _tokens(amount: int) -> str:
    return f"{amount / TOKEN:,.4f}"
