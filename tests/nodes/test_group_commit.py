"""The heavy node's input log commits in groups: one transaction for everything queued, in the
order it was queued, and nothing acknowledged is lost when the process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from nodes.store import Duplicate, Input, Store

WRITER = textwrap.dedent(
    """
    import os, sys, threading
    from nodes.store import Input, Store

    store = Store(sys.argv[1])

    def submit(thread):
        for i in range(100_000):
            key = f"{thread}-{i}"
            store.wait(store.enqueue(1, Input.SUBMISSION, key, {"i": i}, bytes(64)))
            os.write(1, f"{key}\\n".encode())  # acknowledged (one atomic pipe write)

    for t in range(8):
        threading.Thread(target=submit, args=(t,)).start()
    """
)


def test_no_acknowledged_submission_is_lost_when_the_node_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "heavy.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert writer.stdout is not None
    acknowledged = []
    try:
        while len(acknowledged) < 400:
            line = writer.stdout.readline()
            assert line, "the writer stopped before it was killed"
            acknowledged.append(line.strip())
    finally:
        os.kill(writer.pid, signal.SIGKILL)  # mid-commit, most likely: no clean shutdown
        rest, _ = writer.communicate(timeout=30)
    acknowledged += [line for line in rest.splitlines() if line]
    logged = {entry.key for entry in Store(path).inputs(1)}
    assert set(acknowledged) <= logged


def test_a_group_is_one_transaction_in_queue_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "heavy.db")
    queued = [store.enqueue(7, Input.SUBMISSION, f"d{i}", {}, bytes([i])) for i in range(5)]
    store.wait(queued[-1])  # commits all five
    assert store.commits == 1
    assert all(p.done and p.error is None for p in queued)
    assert [e.key for e in store.inputs(7)] == [f"d{i}" for i in range(5)]


def test_a_duplicate_in_a_group_fails_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "heavy.db")
    store.append(7, Input.SUBMISSION, "d0")
    first, again, other = (store.enqueue(7, Input.SUBMISSION, k) for k in ("d1", "d0", "d2"))
    store.wait(other)
    with pytest.raises(Duplicate):
        store.wait(again)
    store.wait(first)
    assert [e.key for e in store.inputs(7)] == ["d0", "d1", "d2"]


def test_concurrent_writers_are_all_durable_and_share_commits(tmp_path: Path) -> None:
    store = Store(tmp_path / "heavy.db")
    start = threading.Barrier(8)

    def write(t: int) -> None:
        start.wait()
        for i in range(25):
            store.append(3, Input.SUBMISSION, f"{t}-{i}")

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.inputs(3)) == 200
    assert store.commits <= 200
