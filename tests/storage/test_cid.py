"""CIDs: known vectors, parsing and refusals, and UnixFS DAGs read back independently."""

from __future__ import annotations

import ast
import base64
import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import market.storage.cid as cid_module
from market.storage.cid import (
    DAG_PB,
    RAW,
    Cid,
    build_file_dag,
    content_matches,
    file_cid,
    parse_cid,
    raw_cid,
)
from market.storage.errors import InvalidCidError, StorageError, UnsupportedCidError
from tests.storage.vectors import VECTORS, Vector

HELLO = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vectors(vector: Vector) -> None:
    data = vector.data()
    assert len(data) == vector.size
    cid = file_cid(data, vector.chunk_size)
    assert str(cid) == vector.cid
    assert parse_cid(vector.cid) == cid
    assert content_matches(cid, data) == (vector.chunk_size == cid_module.CHUNK_SIZE)


def test_small_content_is_one_raw_block() -> None:
    cid = file_cid(b"hello world\n")
    assert cid.codec == RAW and cid.codec_name == "raw"
    assert cid == raw_cid(b"hello world\n")
    assert cid.digest == hashlib.sha256(b"hello world\n").digest()
    assert str(cid).startswith("bafkrei")


def test_large_content_is_a_dag_pb_root() -> None:
    cid = file_cid(bytes(cid_module.CHUNK_SIZE + 1))
    assert cid.codec == DAG_PB and str(cid).startswith("bafybei")


def test_binary_layout() -> None:
    cid = raw_cid(b"")
    assert cid.to_bytes() == bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(b"").digest()


def test_content_matches_refuses_other_bytes() -> None:
    cid = parse_cid(HELLO)
    assert content_matches(cid, b"hello world\n")
    assert not content_matches(cid, b"hello world!")
    big = bytes(300_000)
    assert not content_matches(file_cid(big), big[:-1] + b"\x01")


def _b32(binary: bytes) -> str:
    return "b" + base64.b32encode(binary).decode().rstrip("=").lower()


DIGEST = hashlib.sha256(b"x").digest()


@pytest.mark.parametrize(
    ("text", "error", "says"),
    [
        ("", InvalidCidError, "not a CID"),
        ("hello", InvalidCidError, "base32 lower-case"),
        (HELLO.upper(), InvalidCidError, "base32 lower-case"),
        ("zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY", InvalidCidError, "base32"),
        (HELLO[:-5], InvalidCidError, "not a CID"),
        (HELLO + "a", InvalidCidError, "not a CID"),
        ("b" + "a" * 200, InvalidCidError, "not a CID"),
        ("b1", InvalidCidError, "a-z and 2-7"),
        (_b32(bytes([0x02, 0x55, 0x12, 0x20]) + DIGEST), InvalidCidError, "version 2"),
        (_b32(bytes([0x01, 0x55, 0x12, 0x20]) + DIGEST[:31]), InvalidCidError, "digest bytes"),
        (_b32(bytes([0x01, 0x55, 0x12, 0x1F]) + DIGEST[:31]), InvalidCidError, "32 bytes"),
        (_b32(bytes([0x01, 0x55, 0x12])), InvalidCidError, "ends inside a varint"),
        (_b32(bytes([0x01, 0xD5, 0x00, 0x12, 0x20]) + DIGEST), InvalidCidError, "canonical"),
        (_b32(b"\x01" + b"\xff" * 10), InvalidCidError, "longer than 9 bytes"),
        (
            "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n",
            UnsupportedCidError,
            "CIDv0",
        ),
        (_b32(bytes([0x01, 0x71, 0x12, 0x20]) + DIGEST), UnsupportedCidError, "codec 0x71"),
        (_b32(bytes([0x01, 0x55, 0x13, 0x40]) + DIGEST * 2), UnsupportedCidError, "0x13"),
    ],
)
def test_malformed_and_unsupported_cids_are_refused(
    text: str, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says) as raised:
        parse_cid(text)
    assert isinstance(raised.value, StorageError) and isinstance(raised.value, ValueError)
    assert "\n" not in str(raised.value)


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidCidError, match="a CID is a string"):
        parse_cid(b"bafy")  # type: ignore[arg-type]


def test_cid_value_checks() -> None:
    with pytest.raises(UnsupportedCidError):
        Cid(0x71, DIGEST)
    with pytest.raises(InvalidCidError):
        Cid(RAW, DIGEST[:20])


@given(st.binary(max_size=64), st.sampled_from([RAW, DAG_PB]))
def test_parse_inverts_str(data: bytes, codec: int) -> None:
    cid = Cid(codec, hashlib.sha256(data).digest())
    assert parse_cid(str(cid)) == cid


# --- the DAG, read back by a protobuf reader written separately from the encoder -------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(message: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(message, pos)
            out.append((number, value))
        else:
            assert wire == 2
            length, pos = _varint(message, pos)
            out.append((number, message[pos : pos + length]))
            pos += length
    return out


def _read(cid: str, blocks: dict[str, bytes]) -> tuple[bytes, int]:
    """The file bytes under `cid` and its cumulative size, checking every hash on the way."""
    block = blocks[cid]
    parsed = parse_cid(cid)
    assert hashlib.sha256(block).digest() == parsed.digest
    if parsed.codec == RAW:
        return block, len(block)
    fields = _fields(block)
    links = [dict(_fields(value)) for number, value in fields if number == 2]  # type: ignore[arg-type]
    (data,) = [value for number, value in fields if number == 1]
    assert [number for number, _ in fields] == [2] * len(links) + [1]  # Links, then Data
    unixfs = _fields(data)  # type: ignore[arg-type]
    assert unixfs[0] == (1, 2)  # Type = File
    filesize = dict(unixfs)[3]
    blocksizes = [value for number, value in unixfs if number == 4]
    content = b""
    total = len(block)
    for link, blocksize in zip(links, blocksizes, strict=True):
        assert link[2] == b""  # an empty Name, written out
        child, child_size = _read(str(_cid_from_bytes(link[1])), blocks)  # type: ignore[arg-type]
        assert len(child) == blocksize
        assert link[3] == child_size  # Tsize
        content += child
        total += child_size
    assert len(content) == filesize
    return content, total


def _cid_from_bytes(binary: bytes) -> Cid:
    return parse_cid(_b32(binary))


@settings(max_examples=60, deadline=None)
@given(
    st.binary(max_size=3000),
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=2, max_value=6),
)
def test_dag_reads_back_as_the_file(data: bytes, chunk_size: int, max_links: int) -> None:
    dag = build_file_dag(data, chunk_size, max_links)
    assert dag.root == file_cid(data, chunk_size, max_links)
    content, _ = _read(str(dag.root), dag.blocks)
    assert content == data
    leaves = max(1, -(-len(data) // chunk_size))
    assert sum(parse_cid(c).codec == RAW for c in dag.blocks) <= leaves  # equal chunks dedupe


def test_layout_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        file_cid(b"x", chunk_size=0)
    with pytest.raises(ValueError):
        file_cid(b"x", max_links=1)


# --- purity ---------------------------------------------------------------------------------

ALLOWED_IMPORTS = {"__future__", "base64", "hashlib", "re", "collections", "dataclasses", "market"}


def test_cid_module_is_pure() -> None:
    """No file, network, clock or process library: CIDs are values computed from values."""
    tree = ast.parse(Path(cid_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
            if node.module.startswith("market"):
                assert node.module == "market.storage.errors"
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not calls & {"open", "print", "input", "exec", "eval", "__import__"}
