"""Compiled contract artifacts shipped inside the package (built by `make contracts`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from market.chain.errors import ChainError


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: what deploying and calling it needs."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler: dict[str, Any]
    source_hashes: dict[str, str]


@cache
def load_artifact(name: str) -> Artifact:
    """The artifact of contract `name` (for example ``"Marketplace"``)."""
    path = resources.files("market.chain") / "artifacts" / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ChainError(
            f"no compiled artifact for contract {name!r}; run `make contracts` to build them"
        ) from None
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        compiler=data["compiler"],
        source_hashes=data["sourceHashes"],
    )


ARTIFACT_NAMES = ("DataToken", "Marketplace")
