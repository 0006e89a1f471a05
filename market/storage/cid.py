"""Content identifiers (CIDs), computed exactly as an IPFS node computes them. Pure: no I/O.

A market object is addressed by the CID that `ipfs add --cid-version=1 --raw-leaves` gives its
bytes with the default chunker (`size-262144`) and the balanced layout, so the embedded store and
a real IPFS node agree on every address:

- up to one chunk (256 KiB): the CIDv1 of a single `raw` (0x55) block, its sha2-256 multihash,
  written in multibase base32 lower-case (`bafkrei...`);
- larger: the root of a UnixFS file DAG: raw leaves of 256 KiB, `dag-pb` (0x70) parents of at
  most 174 links each, level by level (`bafybei...`).

The dag-pb and UnixFS protobuf messages are encoded here by hand (a few fields, in the canonical
order IPFS writes them) rather than with a protobuf library: the whole format is small, and the
byte layout is what the CID commits to, so it is better spelled out than generated.

Only what this market writes is accepted: CIDv1, base32, sha2-256, raw or dag-pb. A CIDv0
(`Qm...`) or another hash is refused with `UnsupportedCidError`, because its bytes could not be
checked against it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from market.storage.errors import InvalidCidError, UnsupportedCidError

CHUNK_SIZE = 262_144
"""IPFS's default fixed-size chunker (`size-262144`), in Kubo and in the JS node alike."""

MAX_LINKS = 174
"""Most links in one dag-pb node of the balanced layout (both implementations' default)."""

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
_DIGEST_SIZE = 32
_CID_V1 = 1
_MULTIBASE_BASE32 = "b"
_BASE32_TEXT = re.compile(r"b[a-z2-7]+")
_MAX_CID_TEXT = 128  # a CIDv1 sha2-256 in base32 is 59 characters; anything long is garbage
_CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb"}
_UNIXFS_FILE = 2  # UnixFS Data.DataType.File


@dataclass(frozen=True)
class Cid:
    """A CIDv1 with a sha2-256 multihash: the codec of the block it names and the block's digest."""

    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.codec not in _CODEC_NAMES:
            raise UnsupportedCidError(f"codec 0x{self.codec:x} is neither raw nor dag-pb")
        if len(self.digest) != _DIGEST_SIZE:
            raise InvalidCidError(f"a sha2-256 digest is 32 bytes, not {len(self.digest)}")

    @property
    def codec_name(self) -> str:
        return _CODEC_NAMES[self.codec]

    def to_bytes(self) -> bytes:
        """The binary CID: version, codec, then the multihash (function, length, digest)."""
        return (
            _varint(_CID_V1)
            + _varint(self.codec)
            + _varint(SHA2_256)
            + _varint(_DIGEST_SIZE)
            + self.digest
        )

    def __str__(self) -> str:
        text = base64.b32encode(self.to_bytes()).decode("ascii").rstrip("=").lower()
        return _MULTIBASE_BASE32 + text


@dataclass(frozen=True)
class FileDag:
    """The blocks `ipfs add` would store for a file, keyed by CID string; `root` names it."""

    root: Cid
    blocks: dict[str, bytes]


def raw_cid(block: bytes | memoryview) -> Cid:
    """The CID of `block` as one raw block (what IPFS gives content of at most one chunk)."""
    return Cid(RAW, hashlib.sha256(block).digest())


def file_cid(data: bytes, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> Cid:
    """The CID `ipfs add --cid-version=1 --raw-leaves` gives `data` (defaults: its defaults)."""
    return _layout(data, chunk_size, max_links, None)


def build_file_dag(
    data: bytes, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS
) -> FileDag:
    """Every block of `data`'s UnixFS DAG, for comparing block by block with an IPFS node."""
    blocks: dict[str, bytes] = {}
    root = _layout(data, chunk_size, max_links, blocks)
    return FileDag(root, blocks)


def content_matches(cid: Cid, data: bytes) -> bool:
    """Whether `data` is the content `cid` names: its raw block, or a file DAG rebuilt from it.

    A dag-pb CID is checked by rebuilding the DAG with IPFS's default chunker and layout: content
    added to IPFS with other settings (another chunker, trickle layout) does not match it.
    """
    if cid.codec == RAW:
        return hashlib.sha256(data).digest() == cid.digest
    return file_cid(data) == cid


def parse_cid(text: str) -> Cid:
    """Parse a CID string, refusing anything this market could not verify, with the reason."""
    if not isinstance(text, str):
        raise InvalidCidError(f"a CID is a string, not {type(text).__name__}")
    shown = text if len(text) <= 70 else text[:67] + "..."
    if text.startswith("Qm") and len(text) == 46:
        raise UnsupportedCidError(
            f"{shown!r} is a CIDv0; this market uses CIDv1 ('b...'): add content with "
            "cid_version=1 and raw_leaves=True, or convert it with `ipfs cid base32`"
        )
    if not text or len(text) > _MAX_CID_TEXT or not _BASE32_TEXT.fullmatch(text):
        raise InvalidCidError(
            f"{shown!r} is not a CID: expected CIDv1 in base32 lower-case, 'b' then a-z and 2-7"
        )
    body = text[1:]
    try:
        binary = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except ValueError as exc:  # binascii.Error: a length base32 cannot have
        raise InvalidCidError(
            f"{shown!r} is not a CID: its base32 does not decode ({exc})"
        ) from exc
    version, pos = _read_varint(binary, 0, shown)
    if version != _CID_V1:
        raise InvalidCidError(f"{shown!r} is not a CID: version {version}, expected 1")
    codec, pos = _read_varint(binary, pos, shown)
    hash_fn, pos = _read_varint(binary, pos, shown)
    size, pos = _read_varint(binary, pos, shown)
    digest = binary[pos:]
    if len(digest) != size:
        raise InvalidCidError(
            f"{shown!r} is not a CID: its multihash says {size} digest bytes, it has {len(digest)}"
        )
    if hash_fn != SHA2_256:
        raise UnsupportedCidError(
            f"{shown!r} uses hash function 0x{hash_fn:x}; this market verifies sha2-256 only"
        )
    if codec not in _CODEC_NAMES:
        raise UnsupportedCidError(
            f"{shown!r} has codec 0x{codec:x}; this market stores raw (0x55) or dag-pb (0x70) only"
        )
    cid = Cid(codec, digest)
    if str(cid) != text:  # non-minimal varints or stray low bits in the last base32 character
        raise InvalidCidError(f"{shown!r} is not a canonical CID; its canonical form is {cid}")
    return cid


# --- the balanced UnixFS layout -------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    cid: Cid
    tsize: int  # a link's Tsize: this block's size plus every block below it
    filesize: int  # file bytes under this node: its entry in the parent's blocksizes


def _layout(data: bytes, chunk_size: int, max_links: int, keep: dict[str, bytes] | None) -> Cid:
    """Chunk, then group `max_links` nodes under a parent, level by level, up to one root.

    This is the JS importer's balanced builder (`reduceToParents`); Kubo's balanced builder
    fills the same tree depth-first, so both give the same root. A file of one chunk is that one
    raw leaf; a lone node at an upper level still gets a parent of its own, as in both.
    """
    if chunk_size < 1 or max_links < 2:
        raise ValueError("chunk_size must be positive and max_links at least 2")
    view = memoryview(data)
    level: list[_Node] = []
    for start in range(0, max(len(view), 1), chunk_size):
        chunk = view[start : start + chunk_size]
        leaf = _Node(raw_cid(chunk), len(chunk), len(chunk))
        if keep is not None:
            keep[str(leaf.cid)] = bytes(chunk)
        level.append(leaf)
    if len(level) == 1:
        return level[0].cid
    while len(level) > 1:
        level = [_parent(level[i : i + max_links], keep) for i in range(0, len(level), max_links)]
    return level[0].cid


def _parent(children: list[_Node], keep: dict[str, bytes] | None) -> _Node:
    filesize = sum(child.filesize for child in children)
    unixfs = (
        _field_varint(1, _UNIXFS_FILE)
        + _field_varint(3, filesize)
        + b"".join(_field_varint(4, child.filesize) for child in children)
    )
    block = _pb_node(((child.cid.to_bytes(), child.tsize) for child in children), unixfs)
    node = _Node(
        Cid(DAG_PB, hashlib.sha256(block).digest()),
        len(block) + sum(child.tsize for child in children),
        filesize,
    )
    if keep is not None:
        keep[str(node.cid)] = block
    return node


# --- protobuf, by hand ----------------------------------------------------------------------


def _pb_node(links: Iterable[tuple[bytes, int]], data: bytes) -> bytes:
    """A dag-pb PBNode: its Links (field 2) first, then Data (field 1), as dag-pb requires.

    Each PBLink carries Hash (1), an empty Name (2) and Tsize (3): IPFS writes the empty name
    for file links, and leaving it out would change every parent's CID.
    """
    encoded = [
        _field_bytes(2, _field_bytes(1, cid) + _field_bytes(2, b"") + _field_varint(3, tsize))
        for cid, tsize in links
    ]
    return b"".join(encoded) + _field_bytes(1, data)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _varint(value: int) -> bytes:
    """Unsigned LEB128, as protobuf and multiformats both write integers."""
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int, shown: str) -> tuple[int, int]:
    value = 0
    for shift in range(0, 63, 7):
        if pos >= len(data):
            raise InvalidCidError(f"{shown!r} is not a CID: it ends inside a varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise InvalidCidError(f"{shown!r} is not a CID: a varint longer than 9 bytes")
