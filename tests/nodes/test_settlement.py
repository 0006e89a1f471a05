"""Settlement that one member cannot block, and a node that never signs twice.

Real `HeavyNode`s on the embedded chain, their HTTP calls delivered in-process (`Network`), and
ticked by the test, so that each attack lands exactly where it hurts: a member's bad signature
arriving before the honest quorum's, a restart in the middle of a round. Each test is named
after the attack it tries.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from compute.errors import ProtocolError
from compute.messages import CloseSubmissions
from compute.randomness import AesCtrRandom
from compute.round import HeavyNodeRound, LightNodeRound
from market.chain import Chain
from market.chain import errors as E
from market.escrow import JobState, JobView
from market.escrow.documents import ResultDocument
from market.escrow.eip712 import (
    Domain,
    InvalidSignature,
    abort_digest,
    recover,
    recover_strict,
    result_digest,
    sign_digest,
)
from market.keys import box_public_key
from market.sandbox import Sandbox
from market.staking.client import DatasetRecord
from nodes import settle as settle_module
from nodes import wire
from nodes.heavy import HeavyNode, Rejected
from nodes.light import LightNode
from nodes.store import DoubleSigning, Duplicate, Input, Store
from nodes.wire import SignedSubmission
from tests.nodes.harness import Clock, mean_config
from tests.signatures import high_s_twin

TIMEOUT = 2.0
"""The nodes' peer timeout (seconds of the test's clock)."""


@dataclass
class Reply:
    status_code: int
    body: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.body)

    def json(self) -> dict[str, Any]:
        return self.body


@dataclass
class Network:
    """HTTP between the nodes, in one process: `http://<name>/jobs/...` goes straight to that
    node's handler. A host in `down` is unreachable; `cut(url, body)` drops one request (as
    unreachable); `sent` keeps every signature message posted, by signer."""

    nodes: dict[str, HeavyNode] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    cut: Callable[[str, dict[str, Any]], bool] = lambda url, body: False
    sent: dict[str, set[str]] = field(default_factory=dict)
    first_signature: Callable[[dict[str, Any]], None] | None = None
    """Called once, before the first signature message is delivered (the attacker's cue)."""

    def post(
        self, url: str, json: dict[str, Any], timeout: float = 0, allow_redirects: bool = True
    ) -> Reply:
        host, path = url.removeprefix("http://").split("/", 1)
        _, job, what = path.split("/")
        if what == "signatures":
            self.sent.setdefault(json["signer"], set()).add(json["digest"])
            if self.first_signature is not None:
                hook, self.first_signature = self.first_signature, None
                hook(json)
        if host in self.down or host not in self.nodes or self.cut(url, json):
            raise requests.ConnectionError(f"{host} is unreachable")
        return self.call(host, what, int(job), json)

    def call(self, host: str, what: str, job: int, body: dict[str, Any]) -> Reply:
        node = self.nodes[host]
        handler = {
            "submissions": node.accept_submission,
            "peer": node.accept_peer,
            "signatures": node.accept_signature,
        }[what]
        try:
            return Reply(200, handler(job, body))
        except Rejected as exc:
            return Reply(exc.status, {"detail": exc.detail})


@dataclass
class Market:
    sandbox: Sandbox
    tmp: Path
    network: Network = field(default_factory=Network)
    clock: Clock = field(default_factory=Clock)
    members: list[LocalAccount] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    """address -> host name on the network"""

    def register(self, count: int) -> list[LocalAccount]:
        stake = self.sandbox.config.min_heavy_node_stake
        for _ in range(count):
            account = self.sandbox.account(stake)
            name = f"node{len(self.members)}"
            self.sandbox.staking.register_heavy_node(
                account, stake, f"http://{name}", box_public_key(account)
            )
            self.members.append(account)
            self.names[account.address] = name
        self.members.sort(key=lambda a: int(a.address, 16))
        return self.members

    def run(self, account: LocalAccount) -> HeavyNode:
        """A heavy node for `account` on its store (again after a crash: same store)."""
        node = HeavyNode(
            account,
            self.sandbox.chain,
            self.sandbox.deployment,
            Store(self.tmp / f"{account.address}.db"),
            mean_config,
            clock=self.clock,
            peer_timeout=TIMEOUT,
            http=self.network,
        )
        self.network.nodes[self.names[account.address]] = node
        return node

    def host(self, account: LocalAccount) -> str:
        return self.names[account.address]

    def post(self, accept: list[LocalAccount] | None = None, providers: int = 3) -> JobView:
        buyer = self.sandbox.account(10_000 * 10**18)
        job_id = self.sandbox.post(buyer, self.members, accept=accept, min_participants=1)
        view = self.sandbox.escrow.job(job_id)
        self.datasets = [self.sandbox.dataset() for _ in range(providers)]
        return view

    def submit(self, view: JobView, rng: np.random.Generator | None = None) -> None:
        rng = rng or np.random.default_rng(1)
        s = self.sandbox
        for owner, dataset_id in self.datasets:
            light = LightNode(owner, s.escrow, s.staking, http=self.network)
            light.submit(view, mean_config(view), dataset_id, rng.normal(128, 15, 20))

    def past_deadline(self, view: JobView) -> None:
        self.clock.offset += view.deadline - self.clock() + 1

    def drive(
        self, nodes: list[HeavyNode], until: Callable[[], bool], steps: int = 60, check: bool = True
    ) -> None:
        """Tick `nodes` in turn (the clock moving on a little each pass) until `until()`, at
        most `steps` passes (with `check`, failing if it never came)."""
        for _ in range(steps):
            if until():
                return
            for node in nodes:
                node.tick()
            self.clock.offset += TIMEOUT / 3
        assert until() or not check, "the nodes did not get there"

    def state(self, job_id: int) -> JobState:
        return self.sandbox.escrow.job_state(job_id)


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    with Chain.embedded() as chain:
        yield Market(Sandbox.deploy(chain), tmp_path)


def body(signer: str, digest: bytes, signature: bytes) -> dict[str, Any]:
    return {"digest": "0x" + digest.hex(), "signer": signer, "signature": "0x" + signature.hex()}


def finalized(market: Market, job_id: int) -> Callable[[], bool]:
    return lambda: market.state(job_id) is JobState.FINALIZED


# ----------------------------------------------------------------------------- strict recovery
def test_strict_recovery_refuses_what_openzeppelin_refuses() -> None:
    signer = Account.create()
    digest = secrets.token_bytes(32)
    good = sign_digest(signer, digest)
    assert recover_strict(digest, good) == signer.address
    malleated = {
        "high-s twin": high_s_twin(good),
        "v in {0, 1}": good[:64] + bytes([good[64] - 27]),
        "64 bytes (EIP-2098)": good[:64],
        "zero r": bytes(32) + good[32:],
    }
    for name, bad in malleated.items():
        if name in ("high-s twin", "v in {0, 1}"):
            assert recover(digest, bad) == signer.address, name  # the lenient one takes them
        with pytest.raises(InvalidSignature):
            recover_strict(digest, bad)


def test_strict_recovery_agrees_with_the_contract(market: Market) -> None:
    """What `recover_strict` refuses, `finalize` reverts on (OpenZeppelin's ECDSA on chain)."""
    sandbox = market.sandbox
    members = sandbox.heavy_nodes(3)
    buyer = sandbox.account(10_000 * 10**18)
    job_id = sandbox.post(buyer, members)
    result, _ = sandbox.result(job_id, {buyer.address: 1})
    digest = result_digest(sandbox.escrow.domain, result)
    good = sandbox.sign(members[:2], result)
    for bad in (high_s_twin(good[1]), good[1][:64] + bytes([good[1][64] - 27])):
        with pytest.raises(InvalidSignature):
            recover_strict(digest, bad)
        with pytest.raises(E.MarketplaceInvalidSignature):
            sandbox.escrow.finalize(buyer, result, [good[0], bad])
    assert [recover_strict(digest, g) for g in good] == [m.address for m in members[:2]]
    sandbox.escrow.finalize(buyer, result, good)


def test_the_store_never_records_a_second_digest_for_a_job(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.db")
    store.protect(1, "result", b"\x01" * 32, {"result": "R"}, b"doc")
    store.protect(1, "result", b"\x01" * 32, {"result": "R"}, b"doc")  # the same: fine
    for kind, digest in (("result", b"\x02" * 32), ("abort", b"\x01" * 32)):
        with pytest.raises(DoubleSigning):
            store.protect(1, kind, digest, {})
    store.protect(2, "abort", b"\x03" * 32, {"reason": "too_few_participants"})
    store.close()
    again = Store(tmp_path / "node.db")  # what was recorded survives a restart
    held = again.protected(1)
    assert held is not None and (held.kind, held.digest, held.document) == (
        "result", b"\x01" * 32, b"doc",
    )  # fmt: skip
    with pytest.raises(DoubleSigning):
        again.protect(1, "abort", b"\x03" * 32, {})


def test_decisions_are_logged_in_order_with_the_messages(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.db")
    store.add_submission(1, "0xaa", b"share", {"dataset": "0xaa"})
    store.add_peer_message(1, "agreement", 2, {"sender": 2})
    store.append(1, Input.GIVE_UP, "3")
    store.append(1, Input.CLOSE, body={"at": 5.0})
    store.add_peer_message(1, "agreement", 3, {"sender": 3})
    with pytest.raises(Duplicate):
        store.append(1, Input.GIVE_UP, "3")
    kinds = [(e.kind, e.key) for e in store.inputs(1)]
    assert kinds == [
        (Input.SUBMISSION, "0xaa"), (Input.PEER, "agreement:2"), (Input.GIVE_UP, "3"),
        (Input.CLOSE, ""), (Input.PEER, "agreement:3"),
    ]  # fmt: skip
    assert store.submission_bodies(1) == {"0xaa": {"dataset": "0xaa"}}


def test_a_store_from_before_the_input_log_keeps_its_submissions(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE submissions (seq INTEGER PRIMARY KEY AUTOINCREMENT, job INTEGER, "
        "dataset TEXT, nonce TEXT, share BLOB, body TEXT, UNIQUE (job, dataset));"
        "CREATE TABLE peer_messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, job INTEGER, "
        "kind TEXT, sender INTEGER, body TEXT, UNIQUE (job, kind, sender));"
        "INSERT INTO submissions (job, dataset, nonce, share, body) VALUES (1, '0xaa', '7', "
        "x'0102', '{}');"
        "INSERT INTO peer_messages (job, kind, sender, body) VALUES (1, 'partial', 2, '{}');"
    )
    db.commit()
    db.close()
    store = Store(path)
    assert [(e.kind, e.key, e.blob) for e in store.inputs(1)] == [
        (Input.SUBMISSION, "0xaa", b"\x01\x02"), (Input.PEER, "partial:2", None),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- attacks
def _honest_pair_and_attacker(market: Market) -> tuple[list[HeavyNode], LocalAccount, JobView]:
    """Three members, two running honest nodes and an attacker (its node unreachable)."""
    members = market.register(3)
    attacker = members[1]  # in the middle: its signature sorts between the honest ones
    honest = [market.run(a) for a in members if a is not attacker]
    view = market.post()
    for node in honest:
        node.tick()  # discovers the job (already accepted by the sandbox)
    market.submit(view)
    market.past_deadline(view)
    return honest, attacker, view


def _attack_at_first_signature(market: Market, attack: Callable[[bytes], None]) -> None:
    """Run `attack(digest)` the moment the honest result's digest is first sent, before any
    honest node can hold a quorum."""
    market.network.first_signature = lambda b: attack(bytes.fromhex(b["digest"][2:]))


def _send(market: Market, nodes: list[HeavyNode], job: int, message: dict[str, Any]) -> list[int]:
    """POST `message` to each of `nodes`; their status codes."""
    net = market.network
    return [net.call(market.names[n.address], "signatures", job, message).status_code
            for n in nodes]  # fmt: skip


def test_a_high_s_twin_of_a_members_signature_does_not_block_the_honest_quorum(market: Market):
    honest, attacker, view = _honest_pair_and_attacker(market)
    answers: list[int] = []

    def attack(digest: bytes) -> None:
        twin = high_s_twin(sign_digest(attacker, digest))
        answers.extend(_send(market, honest, view.job_id, body(attacker.address, digest, twin)))

    _attack_at_first_signature(market, attack)
    market.drive(honest, finalized(market, view.job_id))
    assert answers == [401, 401]


def test_a_signature_with_v_0_or_1_does_not_block_the_honest_quorum(market: Market):
    honest, attacker, view = _honest_pair_and_attacker(market)
    answers: list[int] = []

    def attack(digest: bytes) -> None:
        good = sign_digest(attacker, digest)
        low_v = good[:64] + bytes([good[64] - 27])
        answers.extend(_send(market, honest, view.job_id, body(attacker.address, digest, low_v)))

    _attack_at_first_signature(market, attack)
    market.drive(honest, finalized(market, view.job_id))
    assert answers == [401, 401]


def test_a_member_that_never_accepted_cannot_block_the_quorum_with_its_signature(market: Market):
    members = market.register(3)
    slacker = members[1]
    honest = [market.run(a) for a in members if a is not slacker]
    view = market.post(accept=[a for a in members if a is not slacker])
    for node in honest:
        node.tick()
    market.submit(view)
    market.past_deadline(view)
    answers: list[int] = []

    def attack(digest: bytes) -> None:
        good = body(slacker.address, digest, sign_digest(slacker, digest))
        answers.extend(_send(market, honest, view.job_id, good))

    _attack_at_first_signature(market, attack)
    market.drive(honest, finalized(market, view.job_id))
    assert answers == [403, 403]


def test_a_flood_of_signatures_over_foreign_digests_is_bounded_and_blocks_nothing(market: Market):
    honest, attacker, view = _honest_pair_and_attacker(market)
    answers: list[int] = []
    other_chain = Domain(999, market.sandbox.market)

    def attack(digest: bytes) -> None:
        # This job's digest under another domain recovers to someone else: refused outright.
        foreign = other_chain.digest(digest)
        forged = body(attacker.address, digest, sign_digest(attacker, foreign))
        answers.extend(_send(market, honest[:1], view.job_id, forged))
        # Valid signatures over digests of nothing: two are held (a result and an abort may
        # both come from one member), the rest refused, none counted.
        for _ in range(20):
            junk = secrets.token_bytes(32)
            flood = body(attacker.address, junk, sign_digest(attacker, junk))
            answers.extend(_send(market, honest[:1], view.job_id, flood))

    _attack_at_first_signature(market, attack)
    market.drive(honest, finalized(market, view.job_id))
    assert answers[0] == 401
    assert answers[1:3] == [200, 200] and set(answers[3:]) == {429}


def test_a_member_signing_the_result_and_an_abort_is_reported_and_slashed(market: Market):
    honest, attacker, view = _honest_pair_and_attacker(market)
    escrow = market.sandbox.escrow
    answers: list[int] = []

    def attack(digest: bytes) -> None:
        aborted = abort_digest(escrow.domain, view.job_id, "too_few_participants")
        for d in (digest, aborted):
            answers.extend(_send(market, honest[:1], view.job_id,
                                 body(attacker.address, d, sign_digest(attacker, d))))  # fmt: skip

    stake = market.sandbox.staking.heavy_node(attacker.address).stake
    _attack_at_first_signature(market, attack)
    market.drive(
        honest,
        lambda: (
            finalized(market, view.job_id)()
            and escrow.equivocation_reported(view.job_id, attacker.address)
        ),
    )
    assert answers == [200, 200]
    slashed = stake * market.sandbox.config.equivocation_slash_bps // 10_000
    assert market.sandbox.staking.heavy_node(attacker.address).stake == stake - slashed


def test_a_member_signing_two_different_results_is_reported_and_slashed(market: Market):
    """The attacker signs the honest result and another one, sent with the result it signs:
    the honest node holds both messages and reports it; a result that does not hash to its
    digest is refused."""
    honest, attacker, view = _honest_pair_and_attacker(market)
    escrow = market.sandbox.escrow
    answers: list[int] = []

    def attack(digest: bytes) -> None:
        other, _ = market.sandbox.result(view.job_id, {attacker.address: 1})
        other_digest = result_digest(escrow.domain, other)
        lie = {**body(attacker.address, digest, sign_digest(attacker, digest)),
               "result": settle_module.result_json(other)}  # fmt: skip
        answers.extend(_send(market, honest[:1], view.job_id, lie))  # not the digest's result
        for d, r in ((digest, None), (other_digest, other)):
            message = body(attacker.address, d, sign_digest(attacker, d))
            if r is not None:
                message["result"] = settle_module.result_json(r)
            answers.extend(_send(market, honest[:1], view.job_id, message))

    stake = market.sandbox.staking.heavy_node(attacker.address).stake
    _attack_at_first_signature(market, attack)
    market.drive(
        honest,
        lambda: (
            finalized(market, view.job_id)()
            and escrow.equivocation_reported(view.job_id, attacker.address)
        ),
    )
    assert answers == [400, 200, 200]
    slashed = stake * market.sandbox.config.equivocation_slash_bps // 10_000
    assert market.sandbox.staking.heavy_node(attacker.address).stake == stake - slashed


def test_a_result_is_not_served_before_the_chain_finalizes_it(market: Market):
    members = market.register(3)
    nodes = [market.run(a) for a in members]
    view = market.post()
    for node in nodes:
        node.tick()
    market.submit(view)
    market.past_deadline(view)
    market.network.cut = lambda url, b: url.endswith("/signatures")  # nobody reaches a quorum
    first = nodes[0]

    def signed() -> bool:
        return bool(market.network.sent)

    market.drive(nodes, signed)
    with pytest.raises(Rejected) as refused:
        first.result_document(view.job_id)
    assert refused.value.status == 409
    market.network.cut = lambda url, b: False
    market.drive(nodes, finalized(market, view.job_id))
    raw = first.result_document(view.job_id)
    ResultDocument.from_bytes(raw, market.sandbox.escrow.job(view.job_id).result_hash)


def test_a_member_left_out_of_finalize_claims_its_fee(market: Market):
    members = market.register(3)
    nodes = [market.run(a) for a in members]
    late = members[2]
    view = market.post()
    for node in nodes:
        node.tick()
    market.submit(view)
    market.past_deadline(view)
    # No signature reaches the late member or leaves it: the others finalize without it.
    market.network.cut = lambda url, b: (
        url.endswith("/signatures")
        and (b["signer"] == late.address or url.startswith(f"http://{market.host(late)}/"))
    )
    staking = market.sandbox.staking
    market.drive(nodes, lambda: staking.heavy_node(late.address).fees_earned > 0)
    assert market.state(view.job_id) is JobState.FINALIZED
    earned = {a.address: staking.heavy_node(a.address).fees_earned for a in members}
    assert len(set(earned.values())) == 1  # the same share for each of the three


def test_a_restarted_node_replays_its_give_up_and_never_signs_a_second_result(market: Market):
    """Issue attack #4: a node gives up on a silent peer and signs; after a restart the peer
    is back, and a node that forgot its give-up would run the round again with it and sign a
    different result."""
    members = market.register(3)
    first, second, late = members
    nodes = {a.address: market.run(a) for a in members}
    view = market.post()
    for node in nodes.values():
        node.tick()
    # The late member misses one provider's share: with it, the participants would differ.
    missing = "0x" + market.datasets[2][1].hex()
    net = market.network
    net.cut = lambda url, b: (
        url.startswith(f"http://{market.host(late)}/") and b.get("dataset") == missing
    )
    market.submit(view)
    net.cut = lambda url, b: url.endswith("/signatures")  # no quorum yet
    net.down = {market.host(late)}
    market.past_deadline(view)
    running = [nodes[first.address], nodes[second.address]]
    market.drive(running, lambda: first.address in net.sent)
    (signed,) = net.sent[first.address]

    # The first node crashes; the late member comes back; the first node restarts.
    net.down = set()
    restarted = market.run(first)
    everyone = [restarted, nodes[second.address], nodes[late.address]]
    market.drive(everyone, lambda: False, steps=12, check=False)
    assert net.sent[first.address] == {signed}
    net.cut = lambda url, b: False
    market.drive(everyone, finalized(market, view.job_id))
    assert net.sent[first.address] == {signed}


# ----------------------------------------------------------------------------- crash and restart
class Crash(BaseException):
    """The process dies here (nothing in the node catches a BaseException)."""


@dataclass
class PlainEscrow:
    """The escrow side of the contract for one job, in memory: the contract's checks on
    settlement signatures (strict ECDSA, ascending accepted members, a quorum), no chain."""

    view: JobView
    domain: Domain
    state: JobState = JobState.POSTED
    settled: list[tuple[bytes, tuple[bytes, ...]]] = field(default_factory=list)
    crash: str = ""
    """"before" or "after": the next settlement transaction kills the node there."""
    blocks: int = 0

    def job_count(self) -> int:
        return 1

    def job(self, job_id: int) -> JobView:
        return replace(self.view, state=self.state)

    def job_state(self, job_id: int) -> JobState:
        return self.state

    def finalize(self, sender: Any, result: Any, signatures: list[bytes], consents: Any) -> None:
        self._settle(result_digest(self.domain, result), signatures, JobState.FINALIZED)

    def abort(self, sender: Any, job_id: int, reason: str, signatures: list[bytes]) -> None:
        self._settle(abort_digest(self.domain, job_id, reason), signatures, JobState.ABORTED)

    def _settle(self, digest: bytes, signatures: list[bytes], state: JobState) -> None:
        if self.crash == "before":
            self.crash = ""
            raise Crash()
        if self.state is not JobState.POSTED:
            raise E.MarketplaceJobNotPosted({"jobId": 1, "state": int(self.state)})
        signers = []
        for i, signature in enumerate(signatures):
            try:
                signers.append(recover_strict(digest, signature))
            except InvalidSignature:
                raise E.MarketplaceInvalidSignature({"index": i}) from None
        assert signers == sorted(set(signers), key=lambda a: int(a, 16))
        assert set(signers) <= set(self.view.accepted) and len(signers) >= self.view.quorum
        self.settled.append((digest, tuple(signatures)))
        self.state = state
        if self.crash == "after":
            self.crash = ""
            raise Crash()

    def fee_paid(self, job_id: int, node: str) -> bool:
        return False

    def block_number(self) -> int:
        self.blocks += 1  # a new block on every look: the node always looks
        return self.blocks

    def claim_fee(self, sender: Any, job_id: int, signature: bytes) -> None:
        pass

    def equivocation_reported(self, job_id: int, node: str) -> bool:
        return False

    def report_abort_equivocation(self, *args: Any) -> None:
        pass


@dataclass
class PlainStaking:
    owners: dict[bytes, str]

    def dataset(self, dataset_id: bytes) -> DatasetRecord:
        return DatasetRecord(dataset_id, self.owners[dataset_id], 0, 10**18, "")

    def heavy_node(self, address: str) -> Any:
        return SimpleNamespace(endpoint=f"http://{address}")

    # ... and the stake view's, over the same records
    min_stake = 1
    clock = staticmethod(lambda: 0.0)

    def sync(self, since: float | None = None) -> int:
        return 0

    def dataset_since(self, dataset_id: bytes, since: float) -> DatasetRecord:
        return self.dataset(dataset_id)


class CrashingHeavyNode(RuleBasedStateMachine):
    """A heavy node killed and restarted at any step of a job (after a peer message, a give-up,
    the outcome, while signing, before or after submitting) signs at most one digest for the
    job: never two results, never a result and an abort.

    The node is a real `HeavyNode` on a real SQLite store; its two peers are the pure
    `HeavyNodeRound`s, one of them missing a provider's share (so that waiting for it or giving
    up on it gives different results, and giving up on both an abort)."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp())
        members = sorted((Account.create() for _ in range(3)), key=lambda a: int(a.address, 16))
        self.me, *self.peers = members
        self.now = 1_000.0
        owners = [Account.create() for _ in range(3)]
        datasets = [secrets.token_bytes(32) for _ in owners]
        committee = tuple(a.address for a in members)
        self.view = JobView(1, JobState.POSTED, owners[0].address, bytes(32), 10**21, 1_000, 0,
                            2_000, 1, 2, 0, committee, bytes(32), bytes(32), 0, 3, 0b111,
                            0, 0, 0)  # fmt: skip
        self.escrow = PlainEscrow(self.view, Domain(1, "0x" + "ab" * 20))
        self.staking = PlainStaking({d: o.address for d, o in zip(datasets, owners, strict=True)})
        self.signed: set[bytes] = set()
        self.pending: list[dict[str, Any]] = []
        config = mean_config(self.view)
        self.rounds = {
            i: HeavyNodeRound(config, i, AesCtrRandom(secrets.token_bytes(16)))
            for i in (2, 3)
        }  # fmt: skip
        self.accounts = {1: self.me, 2: self.peers[0], 3: self.peers[1]}
        self.node = self._start()
        self.node.tick()  # discovers the job
        rng = np.random.default_rng(0)
        for k, (owner, dataset) in enumerate(zip(owners, datasets, strict=True)):
            shares = LightNodeRound(config, "0x" + dataset.hex()).submit(
                rng.normal(128, 15, 10), AesCtrRandom(secrets.token_bytes(16))
            )
            for message in shares:
                if message.recipient == 1:
                    body = SignedSubmission.create(
                        owner, self.escrow.domain, 1, dataset, 1, k, message.share,
                        box_public_key(self.me),
                    ).to_json()  # fmt: skip
                    self.node.accept_submission(1, body)
                elif not (message.recipient == 3 and k == 2):  # peer 3 misses the last one
                    self.rounds[message.recipient].handle(message)
        self.now = 2_001.0  # past the deadline: the peers close (their agreements are on the way)
        for i in (2, 3):
            self._to_peer(i, CloseSubmissions("1"))
        self._tick()  # the node closes too, and sends its agreement

    def _start(self) -> HeavyNode:
        node = HeavyNode(
            self.me, None, None, Store(self.tmp / "node.db"), mean_config,  # type: ignore[arg-type]
            clock=lambda: self.now, peer_timeout=5.0, http=self, escrow=self.escrow,  # type: ignore[arg-type]
            staking=self.staking, stakes=self.staking,  # type: ignore[arg-type]
        )  # fmt: skip
        original = settle_module.sign_digest

        def sign(account: LocalAccount, digest: bytes) -> bytes:
            if account.address == self.me.address:
                self.signed.add(digest)
            return original(account, digest)

        settle_module.sign_digest = sign  # type: ignore[assignment]
        self._unpatch = lambda: setattr(settle_module, "sign_digest", original)
        return node

    def teardown(self) -> None:
        self._unpatch()
        self.node.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the network: the node's posts reach the peers' rounds
    def post(
        self, url: str, json: dict[str, Any], timeout: float = 0, allow_redirects: bool = True
    ) -> Reply:
        to = next(i for i, a in self.accounts.items() if url.startswith(f"http://{a.address}/"))
        if url.endswith("/peer"):
            self._to_peer(to, wire.peer_message(json["payload"]))
        return Reply(200, {"stored": True})

    def _to_peer(self, peer: int, message: Any) -> None:
        try:
            out = self.rounds[peer].handle(message)
        except ProtocolError:
            return  # a resent message: the peer has it
        for sent in out:
            if sent.recipient == 1:
                payload = wire.peer_payload(sent)
                signature = wire.sign_payload(self.accounts[sent.sender], payload)
                self.pending.append({"payload": payload, "signature": signature})
            else:
                self._to_peer(sent.recipient, sent)

    def _restart(self) -> None:
        self._unpatch()
        self.node.store.close()
        self.node = self._start()  # the old process is gone; the store is what is left

    def _tick(self) -> None:
        try:
            self.node.tick()
        except Crash:
            self._restart()

    # -- rules: each is followed by one tick of the node (it runs all along)
    @rule()
    def time_passes(self) -> None:
        """Longer than the peer timeout: the node gives up on peers it has not heard."""
        self.now += 6.0
        self._tick()

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Some of the peers' messages reach the node, in any order."""
        for _ in range(data.draw(st.integers(1, len(self.pending)))):
            message = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
            try:
                self.node.accept_peer(1, message)
            except Rejected:
                pass
        self._tick()

    @precondition(lambda self: self.node.store.protected(1) is not None)
    @rule(peer=st.sampled_from([2, 3]), what=st.sampled_from(["same", "abort", "junk"]))
    def peer_signs(self, peer: int, what: str) -> None:
        """A peer signs what the node signed, an abort, or something else."""
        decision = self.node.store.protected(1)
        assert decision is not None
        digest = {
            "same": decision.digest,
            "abort": abort_digest(self.escrow.domain, 1, "too_few_heavy_nodes"),
            "junk": secrets.token_bytes(32),
        }[what]
        account = self.accounts[peer]
        try:
            self.node.accept_signature(
                1, body(account.address, digest, sign_digest(account, digest))
            )
        except Rejected:
            pass
        self._tick()

    @rule()
    def restart(self) -> None:
        """The node is killed and started again on its store."""
        self._restart()
        self._tick()

    @precondition(lambda self: self.node.store.protected(1) is None)
    @rule(point=st.sampled_from(["protect", "sign"]))
    def crash_while_signing(self, point: str) -> None:
        """Killed when it next signs: just after recording what it signs, or just after
        signing it (neither recorded nor sent)."""
        store = self.node.store
        if point == "protect":
            protect = store.protect

            def crashing_protect(*args: Any) -> None:
                protect(*args)
                raise Crash()

            store.protect = crashing_protect  # type: ignore[method-assign]
        else:

            def crashing_set_signature(*args: Any) -> None:
                raise Crash()

            store.set_signature = crashing_set_signature  # type: ignore[method-assign]
        self._tick()

    @precondition(lambda self: self.escrow.state is JobState.POSTED)
    @rule(point=st.sampled_from(["before", "after"]))
    def crash_while_submitting(self, point: str) -> None:
        """Killed when it next settles on chain: before the transaction, or after it is mined
        (before the node hears of it)."""
        self.escrow.crash = point
        self._tick()

    @invariant()
    def signs_one_digest_at_most(self) -> None:
        assert len(self.signed) <= 1, self.signed
        held = self.node.store.protected(1)
        assert {held.digest} if held else set() >= self.signed
        for digest, signatures in self.escrow.settled:
            assert digest in self.signed or not any(
                recover_strict(digest, s) == self.me.address for s in signatures
            )


CrashingHeavyNode.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None
)
test_a_node_killed_at_any_step_of_settlement_never_signs_two_digests = CrashingHeavyNode.TestCase
