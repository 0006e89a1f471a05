"""The storage package's exceptions: one root, each also the built-in it resembles.

Callers (the CLI, the heavy node's HTTP layer) catch `StorageError` and show its message, which
says what went wrong and what to do; nothing inside this package catches broad exceptions.
"""

from __future__ import annotations

from market.errors import MarketError


class StorageError(MarketError):
    """Root of every error raised by `market.storage`."""


class InvalidCidError(StorageError, ValueError):
    """A string that is not a well-formed CID (bad multibase, varint, multihash or length)."""


class UnsupportedCidError(InvalidCidError):
    """A well-formed CID that this market cannot verify (CIDv0, another codec or hash)."""


class ContentNotFoundError(StorageError, KeyError):
    """No content is stored under this CID (in this store, or reachable by the IPFS node)."""

    def __str__(self) -> str:
        # KeyError's __str__ quotes its argument; a message should read as a sentence.
        return str(self.args[0]) if self.args else ""


class ContentMismatchError(StorageError, ValueError):
    """Bytes read back do not hash to the CID they were stored under: corruption or tampering."""


class IpfsUnavailableError(StorageError, ConnectionError):
    """The IPFS node's HTTP RPC API does not answer, or answers with something unexpected."""


class IpfsDaemonError(StorageError, RuntimeError):
    """The test-support JS IPFS daemon could not be installed, initialised or started."""
