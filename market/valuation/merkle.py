"""The payout tree: a Merkle tree over `(account, amount)` leaves, byte-compatible with
OpenZeppelin's `StandardMerkleTree` (npm `@openzeppelin/merkle-tree`) for the leaf encoding
`["address", "uint256"]`, and so with `Marketplace.claim` (OpenZeppelin `MerkleProof`).

- leaf = keccak256(bytes.concat(keccak256(abi.encode(account, amount)))); hashing twice keeps a
  64-byte leaf preimage from ever being mistaken for an internal node (second-preimage attack).
- internal node = keccak256 of its two children, smaller first (sorted-pair hashing), so a proof
  is a plain list of siblings with no left/right flags.
- n leaves are sorted by hash and stored in an array of 2n-1 nodes laid out as a complete binary
  tree: node i has children 2i+1 and 2i+2, the root is node 0, leaf k (in sorted order) sits at
  index 2n-2-k. The same payouts give the same root in Python and JavaScript, in any input order.

Accounts with a payout of 0 are omitted from the tree (they have nothing to claim), so every leaf
carries a positive amount; the payout rules in `market.valuation.payouts` never produce zeros.
The dump format is OpenZeppelin's `dump()` (`"standard-v1"`), with amounts as decimal strings, so
a tree dumped by either language loads in the other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from market.valuation._checks import check_amount, checksum_account
from market.valuation.errors import (
    DuplicateAccountError,
    EmptyPayoutsError,
    InvalidNodeError,
    InvalidTreeDumpError,
    MalformedInputError,
    UnknownAccountError,
    ValuationError,
)

LEAF_ENCODING: tuple[str, str] = ("address", "uint256")
DUMP_FORMAT = "standard-v1"

Payouts = Mapping[str, int] | Sequence[tuple[str, int]]
"""Payouts by account: a mapping, or a sequence of `(account, amount)` pairs."""

_HEX_NODE = re.compile(r"0x[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"[0-9]+")


def leaf_hash(account: str, amount: int) -> bytes:
    """The 32-byte leaf of `(account, amount)`, as the contract's `payoutLeaf(account, amount)`."""
    checked = checksum_account(account)
    check_amount(amount, f"amount of {checked}")
    return keccak(keccak(encode(list(LEAF_ENCODING), [checked, amount])))


def verify_proof(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    """Whether `proof` proves `leaf` under `root`, as OpenZeppelin's `MerkleProof.verify`."""
    for name, node in (("root", root), ("leaf", leaf), *(("proof element", p) for p in proof)):
        _check_node(node, name)
    computed = leaf
    for sibling in proof:
        computed = _node_hash(computed, sibling)
    return computed == root


@dataclass(frozen=True, slots=True)
class _Leaf:
    account: str  # EIP-55 checksummed
    amount: int  # > 0
    tree_index: int


class PayoutTree:
    """An immutable payout tree. Make one with `build` (from payouts) or `load`/`from_json`
    (from a dump); look accounts up in any letter case."""

    __slots__ = ("_nodes", "_leaves", "_by_account")

    def __init__(self, nodes: tuple[bytes, ...], leaves: tuple[_Leaf, ...]) -> None:
        # Private: `build` and `load` check their input; nothing here does.
        self._nodes = nodes
        self._leaves = leaves
        self._by_account = {leaf.account: leaf for leaf in leaves}

    @classmethod
    def build(cls, payouts: Payouts) -> PayoutTree:
        """Build the tree of `payouts`; every amount must be positive (leave zeros out).

        Raises `InvalidAddressError`, `InvalidAmountError`, `DuplicateAccountError` (one
        account twice, in any letter case) or `EmptyPayoutsError` (no payouts at all)."""
        pairs = list(payouts.items()) if isinstance(payouts, Mapping) else list(payouts)
        checked: list[tuple[str, int]] = []
        seen: set[str] = set()
        for pair in pairs:
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise MalformedInputError(f"expected an (account, amount) pair, got {pair!r}")
            account = checksum_account(pair[0])
            if account in seen:
                raise DuplicateAccountError(
                    f"account {account} has two payouts; sum them into one before building the tree"
                )
            seen.add(account)
            amount = check_amount(pair[1], f"payout of {account}", positive=True)
            checked.append((account, amount))
        if not checked:
            raise EmptyPayoutsError(
                "a payout tree needs at least one positive payout; when nobody is paid, settle "
                "with payoutTotal 0 and no tree"
            )
        hashes = [leaf_hash(account, amount) for account, amount in checked]
        size = 2 * len(hashes) - 1
        nodes: list[bytes] = [b""] * size
        tree_index = [0] * len(hashes)
        for rank, value_index in enumerate(sorted(range(len(hashes)), key=hashes.__getitem__)):
            tree_index[value_index] = size - 1 - rank
            nodes[size - 1 - rank] = hashes[value_index]
        for i in range(size - 1 - len(hashes), -1, -1):
            nodes[i] = _node_hash(nodes[2 * i + 1], nodes[2 * i + 2])
        leaves = tuple(
            _Leaf(account, amount, index)
            for (account, amount), index in zip(checked, tree_index, strict=True)
        )
        return cls(tuple(nodes), leaves)

    @property
    def root(self) -> bytes:
        """The 32-byte root (the `payoutRoot` of a `Result`)."""
        return self._nodes[0]

    @property
    def total(self) -> int:
        """The sum of all payouts (what the tree makes claimable)."""
        return sum(leaf.amount for leaf in self._leaves)

    def __len__(self) -> int:
        return len(self._leaves)

    def __contains__(self, account: object) -> bool:
        try:
            return checksum_account(account) in self._by_account
        except ValuationError:
            return False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PayoutTree):
            return NotImplemented
        return self._nodes == other._nodes and self._leaves == other._leaves

    def __hash__(self) -> int:
        return hash((self._nodes, self._leaves))

    def __repr__(self) -> str:
        return f"PayoutTree(root=0x{self.root.hex()}, leaves={len(self)}, total={self.total})"

    def amount(self, account: str) -> int:
        """The payout of `account`; `UnknownAccountError` if it has none."""
        return self._lookup(account).amount

    def leaf(self, account: str) -> bytes:
        """The leaf hash of `account`'s payout (what the contract marks as claimed)."""
        return self._nodes[self._lookup(account).tree_index]

    def proof(self, account: str) -> list[bytes]:
        """The proof for `claim(jobId, account, amount(account), proof)`: siblings, leaf first."""
        index = self._lookup(account).tree_index
        proof: list[bytes] = []
        while index > 0:
            sibling = index + 1 if index % 2 == 1 else index - 1
            proof.append(self._nodes[sibling])
            index = (index - 1) // 2
        return proof

    def proofs(self) -> dict[str, list[bytes]]:
        """Every account's proof, in the order of `entries()`."""
        return {leaf.account: self.proof(leaf.account) for leaf in self._leaves}

    def entries(self) -> Iterator[tuple[str, int]]:
        """`(checksummed account, amount)` pairs, in the order the payouts were given."""
        return ((leaf.account, leaf.amount) for leaf in self._leaves)

    def dump(self) -> dict[str, Any]:
        """The tree as OpenZeppelin's `StandardMerkleTree.dump()` (amounts as decimal strings)."""
        return {
            "format": DUMP_FORMAT,
            "leafEncoding": list(LEAF_ENCODING),
            "tree": ["0x" + node.hex() for node in self._nodes],
            "values": [
                {"value": [leaf.account, str(leaf.amount)], "treeIndex": leaf.tree_index}
                for leaf in self._leaves
            ],
        }

    def to_json(self, indent: int | None = None) -> str:
        """`dump()` as JSON, byte-identical to `JSON.stringify(tree.dump(), null, indent)`."""
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.dump(), indent=indent, separators=separators)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> PayoutTree:
        """Load a `dump()` from either language and check that it proves every value it lists.

        Accepts any OpenZeppelin `standard-v1` layout (sorted or not) whose nodes are all used;
        amounts may be decimal strings, 0x-hex strings or ints. Raises `InvalidTreeDumpError`."""
        if not isinstance(data, Mapping):
            raise InvalidTreeDumpError(f"a tree dump is a JSON object, got {type(data).__name__}")
        if data.get("format") != DUMP_FORMAT:
            raise InvalidTreeDumpError(
                f"unknown tree format {data.get('format')!r}; expected {DUMP_FORMAT!r}"
            )
        if list(data.get("leafEncoding") or ()) != list(LEAF_ENCODING):
            raise InvalidTreeDumpError(
                f"leafEncoding is {data.get('leafEncoding')!r}; payout trees use "
                f"{list(LEAF_ENCODING)!r}"
            )
        nodes = tuple(_parse_node(node, i) for i, node in enumerate(_list(data, "tree")))
        raw_values = _list(data, "values")
        if not raw_values or len(nodes) != 2 * len(raw_values) - 1:
            raise InvalidTreeDumpError(
                f"{len(raw_values)} values need {max(2 * len(raw_values) - 1, 1)} tree nodes, "
                f"the dump has {len(nodes)}"
            )
        leaves = _parse_leaves(raw_values, nodes)
        for i in range(len(raw_values) - 1):
            if nodes[i] != _node_hash(nodes[2 * i + 1], nodes[2 * i + 2]):
                raise InvalidTreeDumpError(f"tree[{i}] is not the hash of its two children")
        return cls(nodes, leaves)

    @classmethod
    def from_json(cls, text: str | bytes) -> PayoutTree:
        """Parse and `load` a JSON tree dump."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidTreeDumpError(f"a tree dump must be JSON: {exc}") from exc
        return cls.load(data)

    def _lookup(self, account: str) -> _Leaf:
        leaf = self._by_account.get(checksum_account(account))
        if leaf is None:
            raise UnknownAccountError(
                f"account {account} has no payout in the tree with root 0x{self.root.hex()}"
            )
        return leaf


def _node_hash(a: bytes, b: bytes) -> bytes:
    return keccak(a + b if a <= b else b + a)


def _check_node(node: object, name: str) -> None:
    if not isinstance(node, bytes) or len(node) != 32:
        raise InvalidNodeError(f"{name} must be 32 bytes, got {node!r}")


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise InvalidTreeDumpError(f"tree dump field {key!r} must be a list, got {value!r}")
    return value


def _parse_node(node: object, i: int) -> bytes:
    if not isinstance(node, str) or not _HEX_NODE.fullmatch(node):
        raise InvalidTreeDumpError(f"tree[{i}] must be a 0x-prefixed 32-byte hex string: {node!r}")
    return bytes.fromhex(node[2:])


def _parse_amount(raw: object) -> object:
    """Amounts as OpenZeppelin's ABI encoder takes them: decimal or 0x-hex strings, or ints."""
    if isinstance(raw, str):
        if _DECIMAL.fullmatch(raw):
            return int(raw)
        if raw[:2] in ("0x", "0X") and len(raw) > 2:
            try:
                return int(raw, 16)
            except ValueError:
                pass
    return raw  # check_amount rejects anything else with a clear message


def _parse_leaves(raw_values: list[Any], nodes: tuple[bytes, ...]) -> tuple[_Leaf, ...]:
    first_leaf = len(raw_values) - 1  # nodes[0 : n-1] are internal, nodes[n-1 :] are leaves
    leaves: list[_Leaf] = []
    seen_accounts: set[str] = set()
    seen_indices: set[int] = set()
    for i, raw in enumerate(raw_values):
        where = f"values[{i}]"
        value = raw.get("value") if isinstance(raw, Mapping) else None
        index = raw.get("treeIndex") if isinstance(raw, Mapping) else None
        if not isinstance(value, list) or len(value) != 2:
            raise InvalidTreeDumpError(f"{where}.value must be [account, amount], got {value!r}")
        if isinstance(index, bool) or not isinstance(index, int):
            raise InvalidTreeDumpError(f"{where}.treeIndex must be an int, got {index!r}")
        if not first_leaf <= index < len(nodes) or index in seen_indices:
            raise InvalidTreeDumpError(
                f"{where}.treeIndex {index} is not a free leaf slot "
                f"({first_leaf}..{len(nodes) - 1})"
            )
        try:
            account = checksum_account(value[0])
            amount = check_amount(_parse_amount(value[1]), f"payout of {account}", positive=True)
        except ValuationError as exc:
            raise InvalidTreeDumpError(f"{where}: {exc}") from exc
        if account in seen_accounts:
            raise InvalidTreeDumpError(f"{where}: account {account} appears twice")
        if nodes[index] != leaf_hash(account, amount):
            raise InvalidTreeDumpError(
                f"{where}: tree[{index}] is not the leaf of ({account}, {amount})"
            )
        seen_accounts.add(account)
        seen_indices.add(index)
        leaves.append(_Leaf(account, amount, index))
    return tuple(leaves)
