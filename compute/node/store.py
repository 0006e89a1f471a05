"""A heavy node's durable memory: SQLite, committed before any request is answered.

Everything a heavy node receives for a job (submissions, peers' round messages, result
signatures) is stored in arrival order, so that a restarted node rebuilds its round by
replaying it and loses nothing. The round's own randomness (DP noise) comes from a per-job key
kept here too, so the replay sends exactly what the first run sent.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    nonce TEXT NOT NULL,
    share BLOB NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (job, dataset)
);
CREATE TABLE IF NOT EXISTS peer_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job INTEGER NOT NULL,
    kind TEXT NOT NULL,
    sender INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (job, kind, sender)
);
CREATE TABLE IF NOT EXISTS signatures (
    job INTEGER NOT NULL,
    digest BLOB NOT NULL,
    signer TEXT NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (job, digest, signer)
);
CREATE TABLE IF NOT EXISTS score_reports (
    job INTEGER NOT NULL,
    digest BLOB NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job, digest)
);
CREATE TABLE IF NOT EXISTS jobs (
    job INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    document BLOB,
    noise BLOB,
    status TEXT NOT NULL DEFAULT 'collecting'
);
"""


class Duplicate(Exception):
    """The row exists already (a replayed or duplicate message)."""


class Store:
    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _insert(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            try:
                self._db.execute(sql, args)
            except sqlite3.IntegrityError:
                raise Duplicate() from None

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

    def set_status(self, job: int, status: str, document: bytes | None = None) -> None:
        self.job_key(job)
        with self._lock:
            if document is None:
                self._db.execute("UPDATE jobs SET status = ? WHERE job = ?", (status, job))
            else:
                self._db.execute(
                    "UPDATE jobs SET status = ?, document = ? WHERE job = ?",
                    (status, document, job),
                )

    def noise(self, job: int, draw: Callable[[], bytes]) -> bytes:
        """The node's DP noise for `job`: drawn once (`draw`), then the same after a restart."""
        self.job_key(job)
        with self._lock:
            (noise,) = self._db.execute("SELECT noise FROM jobs WHERE job = ?", (job,)).fetchone()
            if noise is None:
                noise = draw()
                self._db.execute("UPDATE jobs SET noise = ? WHERE job = ?", (noise, job))
        return bytes(noise)

    def status(self, job: int) -> tuple[str, bytes | None] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT status, document FROM jobs WHERE job = ?", (job,)
            ).fetchone()
        return (row[0], bytes(row[1]) if row[1] is not None else None) if row else None

    def jobs(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT job FROM jobs ORDER BY job")]

    # -------------------------------------------------------------------------- messages
    def add_submission(
        self, job: int, dataset: str, nonce: int, share: bytes, body: dict[str, Any]
    ) -> None:
        self._insert(
            "INSERT INTO submissions (job, dataset, nonce, share, body) VALUES (?, ?, ?, ?, ?)",
            (job, dataset, str(nonce), share, json.dumps(body)),
        )

    def submissions(self, job: int) -> Iterator[tuple[str, bytes]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT dataset, share FROM submissions WHERE job = ? ORDER BY seq", (job,)
            ).fetchall()
        for dataset, share in rows:
            yield dataset, bytes(share)

    def submission_bodies(self, job: int) -> dict[str, dict[str, Any]]:
        """Dataset id -> the signed submission as received (its consent and any payload)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT dataset, body FROM submissions WHERE job = ?", (job,)
            ).fetchall()
        return {dataset: json.loads(body) for dataset, body in rows}

    def submission_body(self, job: int, dataset: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM submissions WHERE job = ? AND dataset = ?", (job, dataset)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def add_score_report(self, job: int, digest: bytes, body: dict[str, Any]) -> None:
        """A buyer's signed score report (valuation jobs); `Duplicate` when already held."""
        self._insert("INSERT INTO score_reports VALUES (?, ?, ?)", (job, digest, json.dumps(body)))

    def has_score_report(self, job: int, digest: bytes) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM score_reports WHERE job = ? AND digest = ?", (job, digest)
            ).fetchone()
        return row is not None

    def score_reports(self, job: int) -> list[dict[str, Any]]:
        """The distinct signed reports held for `job`, in digest order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM score_reports WHERE job = ? ORDER BY digest", (job,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def submission_count(self, job: int) -> int:
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM submissions WHERE job = ?", (job,)
            ).fetchone()
        return int(n)

    def add_peer_message(self, job: int, kind: str, sender: int, body: dict[str, Any]) -> None:
        self._insert(
            "INSERT INTO peer_messages (job, kind, sender, body) VALUES (?, ?, ?, ?)",
            (job, kind, sender, json.dumps(body)),
        )

    def has_peer_message(self, job: int, kind: str, sender: int) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM peer_messages WHERE job = ? AND kind = ? AND sender = ?",
                (job, kind, sender),
            ).fetchone()
        return row is not None

    def peer_messages(self, job: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM peer_messages WHERE job = ? ORDER BY seq", (job,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def add_signature(self, job: int, digest: bytes, signer: str, signature: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO signatures VALUES (?, ?, ?, ?)",
                (job, digest, signer, signature),
            )

    def signatures(self, job: int, digest: bytes) -> dict[str, bytes]:
        with self._lock:
            rows = self._db.execute(
                "SELECT signer, signature FROM signatures WHERE job = ? AND digest = ?",
                (job, digest),
            ).fetchall()
        return {signer: bytes(sig) for signer, sig in rows}
