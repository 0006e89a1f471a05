"""Errors of the chain layer, and one Python exception class per Solidity custom error.

Every revert of our contracts (and of the OpenZeppelin code they inherit) arrives as an instance of
a class named after the custom error, carrying the error's arguments by name::

    try:
        escrow.claim(...)
    except MarketplaceAlreadyClaimed as err:
        print(err.values["account"])

The classes are generated from the shipped ABIs, so they never drift from the contracts.
"""

from __future__ import annotations

import ast
import json
from importlib import resources
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from market.chain.units import format_utc
from market.errors import MarketError


class ChainError(MarketError):
    """Root of every error raised by `market.chain`."""


class ChainConnectionError(ChainError, ConnectionError):
    """The chain does not answer (a stopped devnet, a wrong RPC URL)."""


class DevnetError(ChainError):
    """A devnet process could not be started or stopped."""


class ContractRevert(ChainError):
    """A contract call or transaction reverted. Subclasses name the custom error."""

    error_name: str = "Revert"
    fields: tuple[str, ...] = ()

    def __init__(self, values: dict[str, Any] | None = None, data: bytes = b"") -> None:
        self.values = dict(values or {})
        self.data = data
        super().__init__(self._message())

    def _message(self) -> str:
        args = ", ".join(
            f"{k}={_show(v)}"
            + (f" ({format_utc(v)})" if is_time_field(self.error_name, k, v) else "")
            for k, v in self.values.items()
        )
        return f"{self.error_name}({args})"


class RevertWithReason(ContractRevert):
    """`revert("...")` / `require(cond, "...")`: a string reason."""

    error_name = "Error"
    fields = ("reason",)


class Panic(ContractRevert):
    """A Solidity panic (assert, arithmetic overflow, division by zero, ...)."""

    error_name = "Panic"
    fields = ("code",)


class UnknownRevert(ContractRevert):
    """Revert data that matches no known error (or no data at all: out of gas, bad opcode)."""

    error_name = "UnknownRevert"


TIME_FIELDS: dict[str, frozenset[str]] = {
    "MarketplaceDeadlineOutOfRange": frozenset({"earliest", "latest"}),
}
"""Arguments that are unix times although their names do not say so (see `is_time_field`)."""

_LATEST_TIME = 2**40
"""Beyond this (year 36812) a number is no time anyone means; it is shown as it is."""


def is_time_field(error: str, field: str, value: Any) -> bool:
    """Whether `field` of the custom error `error` holds a unix time: names ending in `At`,
    `By` or `Until` (`unlockAt`, `closesAt`), a `deadline`, and those in `TIME_FIELDS`."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < _LATEST_TIME:
        return False
    named = field.endswith(("At", "By", "Until")) or field.lower().endswith("deadline")
    return named or field in TIME_FIELDS.get(error, frozenset())


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value) if isinstance(value, str) and not value.startswith("0x") else str(value)


def _canonical_type(param: dict[str, Any]) -> str:
    kind: str = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){kind[5:]}"
    return kind


def _normalize(value: Any, abi_type: str) -> Any:
    if abi_type == "address":
        return to_checksum_address(value)
    if isinstance(value, tuple | list):
        return type(value)(value)
    return value


def _build_registry() -> tuple[dict[bytes, tuple[type[ContractRevert], list[str]]], dict[str, Any]]:
    registry: dict[bytes, tuple[type[ContractRevert], list[str]]] = {}
    classes: dict[str, type[ContractRevert]] = {}
    folder = resources.files("market.chain") / "artifacts"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        abi = json.loads(entry.read_text())["abi"]
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [_canonical_type(p) for p in item["inputs"]]
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            if selector in registry:
                continue
            fields = tuple(p["name"] or f"arg{i}" for i, p in enumerate(item["inputs"]))
            cls = classes.get(item["name"])
            if cls is None:
                cls = type(
                    item["name"],
                    (ContractRevert,),
                    {
                        "error_name": item["name"],
                        "fields": fields,
                        "__doc__": f"Solidity custom error `{item['name']}({', '.join(types)})`.",
                        "__module__": __name__,
                    },
                )
                classes[item["name"]] = cls
            registry[selector] = (cls, types)
    registry[keccak(text="Error(string)")[:4]] = (RevertWithReason, ["string"])
    registry[keccak(text="Panic(uint256)")[:4]] = (Panic, ["uint256"])
    return registry, classes


_REGISTRY, _CLASSES = _build_registry()
globals().update(_CLASSES)
CUSTOM_ERRORS: dict[str, type[ContractRevert]] = dict(_CLASSES)
"""Every custom error class by name."""


def error_class(name: str) -> type[ContractRevert]:
    """The exception class for the custom error `name` (KeyError if no contract declares it)."""
    return CUSTOM_ERRORS[name]


def decode_revert(data: bytes) -> ContractRevert:
    """Turns raw revert data into the matching exception instance."""
    entry = _REGISTRY.get(bytes(data[:4]))
    if entry is None:
        return UnknownRevert({"data": bytes(data)} if data else {}, bytes(data))
    cls, types = entry
    try:
        decoded = abi_decode(types, bytes(data[4:]))
    except Exception:  # malformed payload: keep the raw bytes rather than guess
        return UnknownRevert({"data": bytes(data)}, bytes(data))
    values = {f: _normalize(v, t) for f, v, t in zip(cls.fields, decoded, types, strict=True)}
    return cls(values, bytes(data))


def revert_data_from(exc: BaseException) -> bytes | None:
    """Extracts raw revert data from whatever a provider raised, or None if it is not a revert.

    web3.py puts the hex data on `.data` (ContractCustomError, ContractLogicError); eth-tester's
    TransactionFailed carries it as `"execution reverted: b'...'"`.
    """
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes):
        return data
    if isinstance(data, dict) and isinstance(data.get("data"), str):
        return bytes.fromhex(data["data"].removeprefix("0x"))
    if type(exc).__name__ == "TransactionFailed" and exc.args:
        message = exc.args[0]
        if isinstance(message, bytes):
            return message
        if isinstance(message, str):
            body = message.removeprefix("execution reverted: ").strip()
            if body.startswith(("b'", 'b"')):
                return bytes(ast.literal_eval(body))
            if body.startswith("0x"):
                return bytes.fromhex(body[2:])
            return b""
    if type(exc).__name__ in {"ContractLogicError", "ContractPanicError", "ContractCustomError"}:
        return b""
    return None
