"""The default backend: a content-addressed store in a directory, one file per CID.

Files live under `root/<shard>/<cid>`, where the shard is the CID's next-to-last two characters
(the scheme of IPFS's own flatfs datastore), so no directory grows to millions of entries and the
shards fill evenly. A file is written to a temporary name in its shard and renamed into place:
a reader sees the whole file or none, and processes that store the same bytes at once each
rename identical content over the same name, which is harmless. Nothing is ever locked.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from market.storage.cid import Cid, content_matches, file_cid, parse_cid
from market.storage.errors import ContentMismatchError, ContentNotFoundError

_DIR_MODE = 0o700  # like the rest of $MARKET_HOME: private to its owner
_FILE_MODE = 0o600


class EmbeddedStore:
    """Content-addressed files on local disk; every `get` re-hashes what it reads."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.root)!r})"

    def path_for(self, cid: str) -> Path:
        """Where the content of `cid` is (or would be) kept; raises on a malformed CID."""
        return self._path(parse_cid(cid))

    def put(self, data: bytes) -> str:
        """Store `data` and return its CID; storing the same bytes again changes nothing."""
        data = bytes(data)
        cid = file_cid(data)
        path = self._path(cid)
        try:
            if path.read_bytes() == data:
                return str(cid)
        except FileNotFoundError:
            pass
        # Missing, or damaged on disk: (re)write it. The damaged copy is replaced whole.
        path.parent.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(cid)

    def get(self, cid: str) -> bytes:
        """The bytes stored under `cid`, after checking that they hash to it."""
        parsed = parse_cid(cid)
        path = self._path(parsed)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ContentNotFoundError(
                f"no content {cid} in the embedded store at {self.root}: store it first "
                "(`put`), or point MARKET_IPFS_API at the IPFS node that has it"
            ) from None
        if not content_matches(parsed, data):
            raise ContentMismatchError(
                f"{path} does not hash to {cid}: the file was altered or damaged on disk; "
                "delete it and store the original bytes again"
            )
        return data

    def has(self, cid: str) -> bool:
        """Whether a file is stored under `cid` (not re-hashed: `get` does that)."""
        return self._path(parse_cid(cid)).is_file()

    def _path(self, cid: Cid) -> Path:
        name = str(cid)
        return self.root / name[-3:-1] / name
