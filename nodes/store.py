"""A heavy node's durable memory: SQLite, committed before any request is answered and before
the node acts on a decision.

Two things are kept per job:

- **One ordered input log** (`inputs`): every submission, peer round message and peer
  signature as it was taken, and every decision of the node's own that changes what it would
  sign (closing submissions, giving up on a peer, closing a valuation job's report window),
  plus its settlement attempts and what the chain answered. A restarted node replays the log in
  its original order and reaches the state it was in: the same round, the same outcome.
- **Slashing protection** (`signed`, like an Ethereum validator's EIP-3076 database): the one
  digest, and its kind (result or abort), that the node signs for the job, with the message
  itself, written before the signature is made. `protect` refuses any other digest for that job
  by raising `DoubleSigning`, so the node never holds two signatures of its own for one job.

The round's own randomness (DP noise) comes from a per-job key kept here too, so the replay
sends exactly what the first run sent.

Appends are group-committed: a writer `enqueue`s its entry (in the order it acts on it) and
`wait`s until it is durable; the first waiter commits every entry queued by then in one
transaction (one fsync), the others return when theirs is in. Many concurrent submissions cost
one fsync, each is on disk before it is acknowledged, and the log keeps the enqueue order.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from nodes.errors import NodeError

SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    blob BLOB,
    UNIQUE (job, kind, key)
);
CREATE TABLE IF NOT EXISTS signed (
    job INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('result', 'abort')),
    digest BLOB NOT NULL,
    message TEXT NOT NULL,
    document BLOB,
    signature BLOB
);
CREATE TABLE IF NOT EXISTS jobs (
    job INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    noise BLOB
);
"""


class Input(StrEnum):
    """What an entry of the input log records."""

    SUBMISSION = "submission"
    """A light node's share (`key`: the dataset id; `blob`: the share)."""
    PEER = "peer"
    """A peer's round message (`key`: `kind:sender`)."""
    CLOSE = "close"
    """The node closed submissions (`body.at`: its clock then)."""
    GIVE_UP = "give_up"
    """The node stopped waiting for a peer (`key`: the peer's index)."""
    COMMIT = "commit"
    """A committee member took a kind's late input as its own (`key`: `member:digest`)."""
    LATE = "late"
    """A kind's late input signed by its poster (`key`: its digest; `body`: value, signature)."""
    SIGNATURE = "signature"
    """A peer's verified signature (`key`: `signer:digest`)."""
    ATTEMPT = "attempt"
    """The node is sending a settlement transaction (`key`: its attempt number)."""
    MINED = "mined"
    REVERTED = "reverted"
    """(`body.at`, `body.bad`: the signers the chain refused)"""
    SETTLED = "settled"
    WINDOW_CLOSED = "window_closed"


@dataclass(frozen=True)
class Entry:
    """One input, as logged."""

    seq: int
    kind: Input
    key: str
    body: dict[str, Any]
    blob: bytes | None


@dataclass(frozen=True)
class Protected:
    """What the node signs for a job: recorded before signing, the signature once made."""

    kind: str
    digest: bytes
    message: dict[str, Any]
    document: bytes | None
    signature: bytes | None


class Duplicate(NodeError):
    """The row exists already (a replayed or duplicate message)."""


class DoubleSigning(NodeError, RuntimeError):
    """The node was about to sign a second digest for a job it has signed for: refused (the
    contract would slash its stake). Nothing was signed; look for a bug or a replaced store."""


class Pending:
    """An entry queued for the input log; `Store.wait` returns once it is durable."""

    __slots__ = ("done", "error", "row")

    def __init__(self, row: tuple[Any, ...]) -> None:
        self.row = row
        self.done = False
        self.error: BaseException | None = None


class Store:
    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        """Held while the connection is in use."""
        self._queue: list[Pending] = []
        self._group = threading.Condition()
        """Guards `_queue` and `_leading`; notified when a group is committed."""
        self._leading = False
        self.commits = 0
        """Group commits so far (each one transaction, one fsync)."""
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        """A store written before the input log: its submissions, then its peer messages (the
        order the old replay used), become the log; its unordered signature table is dropped
        (peers resend)."""
        with self._lock:
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
            if "submissions" not in tables:
                return
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR IGNORE INTO inputs (job, kind, key, body, blob) SELECT job, ?, "
                "dataset, body, share FROM submissions ORDER BY seq",
                (Input.SUBMISSION.value,),
            )
            self._db.execute(
                "INSERT OR IGNORE INTO inputs (job, kind, key, body) SELECT job, ?, "
                "kind || ':' || sender, body FROM peer_messages ORDER BY seq",
                (Input.PEER.value,),
            )
            for table in ("submissions", "peer_messages", "signatures"):
                self._db.execute(f"DROP TABLE IF EXISTS {table}")
            self._db.execute("COMMIT")

    # -------------------------------------------------------------------------- jobs
    def job_key(self, job: int) -> bytes:
        """The job's randomness key, created once."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO jobs (job, key) VALUES (?, ?)",
                (job, secrets.token_bytes(16)),
            )
            (key,) = self._db.execute("SELECT key FROM jobs WHERE job = ?", (job,)).fetchone()
        return bytes(key)

    def noise(self, job: int, draw: Callable[[], bytes]) -> bytes:
        """The node's DP noise for `job`: drawn once (`draw`), then the same after a restart."""
        self.job_key(job)
        with self._lock:
            (noise,) = self._db.execute("SELECT noise FROM jobs WHERE job = ?", (job,)).fetchone()
            if noise is None:
                noise = draw()
                self._db.execute("UPDATE jobs SET noise = ? WHERE job = ?", (noise, job))
        return bytes(noise)

    def jobs(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT job FROM jobs ORDER BY job")]

    # -------------------------------------------------------------------------- the input log
    def append(
        self,
        job: int,
        kind: Input,
        key: str = "",
        body: dict[str, Any] | None = None,
        blob: bytes | None = None,
    ) -> None:
        """Log one input after every earlier one, durably; `Duplicate` when (job, kind, key) is
        logged."""
        self.wait(self.enqueue(job, kind, key, body, blob))

    def enqueue(
        self,
        job: int,
        kind: Input,
        key: str = "",
        body: dict[str, Any] | None = None,
        blob: bytes | None = None,
    ) -> Pending:
        """Queue one input for the log, after every input queued before it; nothing is durable
        (nor acknowledged) until `wait` returns."""
        pending = Pending((job, kind.value, key, json.dumps(body or {}), blob))
        with self._group:
            self._queue.append(pending)
        return pending

    def wait(self, pending: Pending) -> None:
        """Return once `pending` is committed (committing the queued group if no one else is);
        raise what its insert raised (`Duplicate`, or the commit's error)."""
        with self._group:
            while not pending.done:
                if self._leading:
                    self._group.wait()
                    continue
                self._leading = True
                group, self._queue = self._queue, []
                self._group.release()
                try:
                    self._commit(group)
                finally:
                    self._group.acquire()
                    self._leading = False
                    self._group.notify_all()
        if pending.error is not None:
            raise pending.error

    def _commit(self, group: list[Pending]) -> None:
        """One transaction for the whole group: each row is inserted or found a duplicate;
        if the commit fails, every row of the group fails with it."""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for pending in group:
                        try:
                            self._db.execute(
                                "INSERT INTO inputs (job, kind, key, body, blob) "
                                "VALUES (?, ?, ?, ?, ?)",
                                pending.row,
                            )
                        except sqlite3.IntegrityError:
                            pending.error = Duplicate()
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self.commits += 1
        except BaseException as exc:
            for pending in group:
                pending.error = exc
            raise
        finally:
            for pending in group:
                pending.done = True

    def has(self, job: int, kind: Input, key: str = "") -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM inputs WHERE job = ? AND kind = ? AND key = ?",
                (job, kind.value, key),
            ).fetchone()
        return row is not None

    def inputs(self, job: int) -> list[Entry]:
        """The job's log, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, key, body, blob FROM inputs WHERE job = ? ORDER BY seq", (job,)
            ).fetchall()
        return [
            Entry(
                seq, Input(kind), key, json.loads(body), bytes(blob) if blob is not None else None
            )
            for seq, kind, key, body, blob in rows
        ]

    def _bodies(self, job: int, kind: Input) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, body FROM inputs WHERE job = ? AND kind = ? ORDER BY seq",
                (job, kind.value),
            ).fetchall()
        return [(key, json.loads(body)) for key, body in rows]

    # -------------------------------------------------------------------------- submissions
    def add_submission(self, job: int, dataset: str, share: bytes, body: dict[str, Any]) -> None:
        self.append(job, Input.SUBMISSION, dataset, body, share)

    def enqueue_submission(
        self, job: int, dataset: str, share: bytes, body: dict[str, Any]
    ) -> Pending:
        """`add_submission` in two steps: queued now (in the order the round took it), durable
        once `wait` returns."""
        return self.enqueue(job, Input.SUBMISSION, dataset, body, share)

    def submission_bodies(self, job: int) -> dict[str, dict[str, Any]]:
        """Dataset id -> the signed submission as received (its consent and any payload)."""
        return dict(self._bodies(job, Input.SUBMISSION))

    def submission_body(self, job: int, dataset: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM inputs WHERE job = ? AND kind = ? AND key = ?",
                (job, Input.SUBMISSION.value, dataset),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def submission_count(self, job: int) -> int:
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM inputs WHERE job = ? AND kind = ?",
                (job, Input.SUBMISSION.value),
            ).fetchone()
        return int(n)

    # -------------------------------------------------------------------------- peers
    def add_peer_message(self, job: int, kind: str, sender: int, body: dict[str, Any]) -> None:
        self.append(job, Input.PEER, f"{kind}:{sender}", body)

    def has_peer_message(self, job: int, kind: str, sender: int) -> bool:
        return self.has(job, Input.PEER, f"{kind}:{sender}")

    def late_inputs(self, job: int) -> dict[str, dict[str, Any]]:
        """A kind's late inputs held for `job` (digest hex -> value and poster's signature),
        in the order taken: more than one only when the poster signed several."""
        return dict(self._bodies(job, Input.LATE))

    # -------------------------------------------------------------------------- signing
    def protect(
        self,
        job: int,
        kind: str,
        digest: bytes,
        message: dict[str, Any],
        document: bytes | None = None,
    ) -> None:
        """Record that the node signs `digest` (of `kind`) for `job`, before it signs. Again
        for the same digest: nothing changes. For any other: `DoubleSigning`."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO signed (job, kind, digest, message, document) "
                "VALUES (?, ?, ?, ?, ?)",
                (job, kind, digest, json.dumps(message), document),
            )
            held_kind, held = self._db.execute(
                "SELECT kind, digest FROM signed WHERE job = ?", (job,)
            ).fetchone()
        if (held_kind, bytes(held)) != (kind, digest):
            raise DoubleSigning(
                f"job {job}: this node signed the {held_kind} 0x{bytes(held).hex()} and will "
                f"sign nothing else (asked to sign the {kind} 0x{digest.hex()})"
            )

    def set_signature(self, job: int, digest: bytes, signature: bytes) -> None:
        """The signature over the protected digest, once made."""
        with self._lock:
            self._db.execute(
                "UPDATE signed SET signature = ? WHERE job = ? AND digest = ?",
                (signature, job, digest),
            )

    def protected(self, job: int) -> Protected | None:
        """What the node signs (or signed) for `job`, if it decided."""
        with self._lock:
            row = self._db.execute(
                "SELECT kind, digest, message, document, signature FROM signed WHERE job = ?",
                (job,),
            ).fetchone()
        if row is None:
            return None
        kind, digest, message, document, signature = row
        return Protected(
            kind,
            bytes(digest),
            json.loads(message),
            bytes(document) if document is not None else None,
            bytes(signature) if signature is not None else None,
        )
