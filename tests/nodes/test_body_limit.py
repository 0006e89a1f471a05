"""The heavy node's body limit counts the bytes actually read: a chunked body, or one whose
Content-Length understates it, is cut off at the limit, and the server reads no further.

Each test runs the node's real HTTP app under uvicorn on a free loopback port, with uvicorn's
own HTTP protocol counting the bytes it takes off the socket, and talks to it over a raw
socket so that nothing on the client side buffers or retries."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol

from nodes.errors import NotFound
from nodes.service import Server, create_app

LIMIT = 1024 * 1024
STREAM = 64 * 1024 * 1024
"""What a client tries to push (the attack read 96 MiB before answering 413)."""
SLACK = 16 * 1024 * 1024
"""Bytes a client may get into the sockets' kernel buffers (loopback autotuning) after the
server stopped reading."""
READS = 512 * 1024
"""What the server may take off the socket past what it needs: a read is up to 256 KiB, and
uvicorn stops reading once 64 KiB wait for the app."""
CHUNK = 64 * 1024


class Counting(H11Protocol):
    """uvicorn's h11 protocol, counting the bytes it reads from every connection."""

    read = 0

    def data_received(self, data: bytes) -> None:
        Counting.read += len(data)
        super().data_received(data)


class Node:
    """What the app asks of a heavy node: it serves job 1 and stores whatever it gets."""

    address = "0x" + "00" * 20

    def accept_submission(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        if job_id != 1:
            raise NotFound(f"no job {job_id}")
        return {"job": job_id, "dataset": body["dataset"]}


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    running = Server(create_app(Node(), max_body=LIMIT), http=Counting)  # port 0: a free port
    url = running.start()
    try:
        host, port = url.removeprefix("http://").split(":")
        Counting.read = 0
        yield host, int(port)
    finally:
        running.stop()


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.settimeout(10)
    sock.connect(address)
    return sock


def _head(headers: dict[str, str], path: str = "/jobs/1/submissions") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: node", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _stream(sock: socket.socket, pieces: Iterator[bytes]) -> int:
    """Send `pieces` until the server closes the connection; the bytes the socket took."""
    sent = 0
    try:
        for piece in pieces:
            sock.sendall(piece)
            sent += len(piece)
    except OSError:  # reset or broken pipe: the server stopped reading and closed
        pass
    return sent


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The response, read until the server closes the connection."""
    raw = b""
    try:
        while chunk := sock.recv(65536):
            raw += chunk
    except OSError:
        pass
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _wait_read(least: int, timeout: float = 5.0) -> None:
    limit = time.monotonic() + timeout
    while Counting.read < least and time.monotonic() < limit:
        time.sleep(0.01)
    time.sleep(0.2)  # and whatever more it would read


def _good_body() -> bytes:
    sig = "0x" + "11" * 65
    return json.dumps(
        {
            "job": 1,
            "dataset": "0x" + "ab" * 32,
            "recipient": 1,
            "nonce": 1,
            "sealed": "AAAA",
            "signature": sig,
            "participation_bps": 0,
            "participation": sig,
        }  # fmt: skip
    ).encode()


def test_a_chunked_body_within_the_limit_reaches_the_endpoint(server):
    with _connect(server) as sock:
        body = _good_body()
        sock.sendall(_head({"Transfer-Encoding": "chunked", "Connection": "close"}))
        for i in range(0, len(body), 16):
            sock.sendall(_chunk(body[i : i + 16]))
        sock.sendall(b"0\r\n\r\n")
        status, _, answer = _response(sock)
    assert status == 200, answer
    assert json.loads(answer)["dataset"] == "0x" + "ab" * 32


def test_a_chunked_body_over_the_limit_is_answered_413_before_it_ends(server):
    """The client sends one byte more than the limit and waits, without ending the body: the
    node answers 413 and closes (it did not wait to read the rest)."""
    with _connect(server) as sock:
        sock.sendall(_head({"Transfer-Encoding": "chunked"}))
        left = LIMIT + 1
        while left:
            piece = b" " * min(CHUNK, left)
            sock.sendall(_chunk(piece))
            left -= len(piece)
        status, headers, body = _response(sock)
    assert status == 413
    assert json.loads(body) == {"detail": f"body larger than {LIMIT} bytes"}
    assert headers["connection"] == "close"


def test_a_chunked_stream_is_cut_off_at_the_limit(server):
    """A client streams 64 MiB, chunked, with no Content-Length: the server stops reading
    just past the 1 MiB limit and closes, so the client cannot push the rest."""

    def pieces() -> Iterator[bytes]:
        yield _head({"Transfer-Encoding": "chunked"})
        for _ in range(STREAM // CHUNK):
            yield _chunk(b"x" * CHUNK)
        yield b"0\r\n\r\n"

    with _connect(server) as sock:
        sent = _stream(sock, pieces())
    _wait_read(LIMIT)
    assert LIMIT < Counting.read < LIMIT + READS, Counting.read
    assert sent < LIMIT + SLACK, f"the client pushed {sent} bytes"


def test_a_content_length_that_understates_the_body_reads_no_further(server):
    """Content-Length says 100 bytes, the client sends 64 MiB: the node reads the 100 it was
    told of (422: not a submission), and what follows is no request: the connection is closed
    long before the limit."""

    def pieces() -> Iterator[bytes]:
        yield _head({"Content-Length": "100"})
        for _ in range(STREAM // CHUNK):
            yield b"{" * CHUNK

    with _connect(server) as sock:
        sent = _stream(sock, pieces())
    _wait_read(100)
    assert Counting.read < LIMIT, Counting.read
    assert sent < LIMIT + SLACK, f"the client pushed {sent} bytes"


def test_a_content_length_over_the_limit_is_refused_unread(server):
    def pieces() -> Iterator[bytes]:
        yield _head({"Content-Length": str(STREAM)})
        for _ in range(STREAM // CHUNK):
            yield b" " * CHUNK

    with _connect(server) as sock:
        sent = _stream(sock, pieces())
    _wait_read(1)
    assert Counting.read < READS, Counting.read
    assert sent < LIMIT + SLACK, f"the client pushed {sent} bytes"
    with _connect(server) as sock:  # and the client that waits is told why
        sock.sendall(_head({"Content-Length": str(LIMIT + 1)}))
        status, headers, body = _response(sock)
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["detail"] == f"body larger than {LIMIT} bytes"
