"""The payout tree: input checks, lookups, dump loading, and properties of proofs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from market.valuation.errors import (
    DuplicateAccountError,
    EmptyPayoutsError,
    InvalidAddressError,
    InvalidAmountError,
    InvalidNodeError,
    InvalidTreeDumpError,
    MalformedInputError,
    UnknownAccountError,
    ValuationError,
)
from market.valuation.merkle import PayoutTree, leaf_hash, verify_proof
from tests.valuation.strategies import UINT256_MAX, addresses, amounts, payouts

ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
CAROL = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"


def _flip(node: bytes, bit: int = 0) -> bytes:
    return bytes([node[0] ^ (1 << bit)]) + node[1:]


# -- structure -----------------------------------------------------------------------------------


def test_leaf_is_double_keccak_of_abi_encoding() -> None:
    encoded = bytes(12) + bytes.fromhex(ALICE[2:]) + (5).to_bytes(32, "big")
    assert leaf_hash(ALICE, 5) == keccak(keccak(encoded))
    assert leaf_hash(ALICE.lower(), 5) == leaf_hash(ALICE, 5)


def test_single_leaf_tree_is_its_leaf() -> None:
    tree = PayoutTree.build({ALICE: 10})
    assert tree.root == leaf_hash(ALICE, 10)
    assert tree.proof(ALICE) == []
    assert verify_proof(tree.root, leaf_hash(ALICE, 10), [])


def test_two_leaf_root_hashes_the_sorted_pair() -> None:
    a, b = sorted([leaf_hash(ALICE, 1), leaf_hash(BOB, 2)])
    tree = PayoutTree.build([(ALICE, 1), (BOB, 2)])
    assert tree.root == keccak(a + b)
    assert tree.proof(ALICE) == [leaf_hash(BOB, 2)]


def test_lookups_accept_any_letter_case() -> None:
    tree = PayoutTree.build({ALICE: 1, BOB: 2, CAROL: 3})
    assert tree.amount(BOB.lower()) == 2
    assert tree.proof(BOB.upper().replace("0X", "0x")) == tree.proof(BOB)
    assert BOB.lower() in tree
    assert "not an address" not in tree
    assert len(tree) == 3 and tree.total == 6
    assert list(tree.entries()) == [(ALICE, 1), (BOB, 2), (CAROL, 3)]
    assert list(tree.proofs()) == [ALICE, BOB, CAROL]


def test_unknown_account_is_a_key_error_with_a_readable_message() -> None:
    tree = PayoutTree.build({ALICE: 1})
    with pytest.raises(UnknownAccountError) as info:
        tree.proof(BOB)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValuationError)
    assert str(info.value).startswith(f"account {BOB} has no payout")


# -- input checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payouts_in", "error"),
    [
        ({}, EmptyPayoutsError),
        ({ALICE: 0}, InvalidAmountError),
        ({ALICE: -1}, InvalidAmountError),
        ({ALICE: 2**256}, InvalidAmountError),
        ({ALICE: 1.0}, InvalidAmountError),
        ({ALICE: True}, InvalidAmountError),
        ({ALICE: "5"}, InvalidAmountError),
        ({ALICE: 1, ALICE.lower(): 2}, DuplicateAccountError),
        ([(ALICE, 1), (ALICE, 2)], DuplicateAccountError),
        ({"0x1234": 1}, InvalidAddressError),
        ({ALICE[2:]: 1}, InvalidAddressError),
        ({"0x" + "g" * 40: 1}, InvalidAddressError),
        ({ALICE.replace("C", "c", 1): 1}, InvalidAddressError),  # wrong checksum
        ([(ALICE, 1, 2)], MalformedInputError),
    ],
)
def test_build_rejects_bad_payouts(payouts_in: Any, error: type[ValuationError]) -> None:
    with pytest.raises(error) as info:
        PayoutTree.build(payouts_in)
    assert isinstance(info.value, ValuationError)
    assert isinstance(info.value, ValueError | TypeError)


def test_max_uint256_amount_and_all_uppercase_address_are_accepted() -> None:
    upper = "0x" + ALICE[2:].upper()
    tree = PayoutTree.build({upper: UINT256_MAX})
    assert list(tree.entries()) == [(ALICE, UINT256_MAX)]


def test_verify_proof_rejects_nodes_that_are_not_32_bytes() -> None:
    leaf = leaf_hash(ALICE, 1)
    with pytest.raises(InvalidNodeError):
        verify_proof(leaf[:31], leaf, [])
    with pytest.raises(InvalidNodeError):
        verify_proof(leaf, leaf, [leaf + b"\x00"])


# -- dumps ---------------------------------------------------------------------------------------


def _dump() -> dict[str, Any]:
    return PayoutTree.build({ALICE: 1, BOB: 2, CAROL: 3}).dump()


def _tamper(edit: str) -> dict[str, Any]:
    dump = _dump()
    if edit == "format":
        dump["format"] = "standard-v2"
    elif edit == "encoding":
        dump["leafEncoding"] = ["address", "uint128"]
    elif edit == "node":
        dump["tree"][0] = "0x" + "00" * 32
    elif edit == "amount":
        dump["values"][0]["value"][1] = "7"
    elif edit == "zero-amount":
        dump["values"][0]["value"][1] = "0"
    elif edit == "internal-index":
        dump["values"][0]["treeIndex"] = 0
    elif edit == "shared-index":
        dump["values"][1]["treeIndex"] = dump["values"][0]["treeIndex"]
    elif edit == "missing-value":
        dump["values"].pop()
    elif edit == "short-node":
        dump["tree"][1] = dump["tree"][1][:-2]
    elif edit == "duplicate-account":
        dump["values"][1]["value"][0] = dump["values"][0]["value"][0]
    return dump


@pytest.mark.parametrize(
    "edit",
    [
        "format",
        "encoding",
        "node",
        "amount",
        "zero-amount",
        "internal-index",
        "shared-index",
        "missing-value",
        "short-node",
        "duplicate-account",
    ],
)
def test_load_rejects_a_tampered_dump(edit: str) -> None:
    with pytest.raises(InvalidTreeDumpError):
        PayoutTree.load(_tamper(edit))


def test_from_json_rejects_text_that_is_not_json() -> None:
    with pytest.raises(InvalidTreeDumpError):
        PayoutTree.from_json("{not json")
    with pytest.raises(InvalidTreeDumpError):
        PayoutTree.from_json("[]")


def test_load_accepts_int_and_hex_amounts_and_unsorted_layouts() -> None:
    tree = PayoutTree.build({ALICE: 1, BOB: 255})
    dump = tree.dump()
    dump["values"][0]["value"][1] = 1
    dump["values"][1]["value"][1] = "0xff"
    assert PayoutTree.load(dump) == tree
    # OpenZeppelin with sortLeaves: false may put the two leaves the other way round.
    dump["tree"][1], dump["tree"][2] = dump["tree"][2], dump["tree"][1]
    for entry in dump["values"]:
        entry["treeIndex"] = 3 - entry["treeIndex"]
    swapped = PayoutTree.load(dump)
    assert swapped.root == tree.root
    assert verify_proof(swapped.root, leaf_hash(BOB, 255), swapped.proof(BOB))


# -- properties ----------------------------------------------------------------------------------


@given(payouts())
def test_every_proof_verifies(payouts_in: dict[str, int]) -> None:
    tree = PayoutTree.build(payouts_in)
    assert len(tree.root) == 32
    for account, amount in payouts_in.items():
        assert verify_proof(tree.root, leaf_hash(account, amount), tree.proof(account))
    assert tree.total == sum(payouts_in.values())


@given(payouts(max_size=30), st.randoms(use_true_random=False))
def test_root_does_not_depend_on_input_order(payouts_in: dict[str, int], rng: Any) -> None:
    items = list(payouts_in.items())
    rng.shuffle(items)
    tree, shuffled = PayoutTree.build(payouts_in), PayoutTree.build(items)
    assert shuffled.root == tree.root
    assert shuffled.proofs() == {account: tree.proof(account) for account, _ in items}
    assert list(shuffled.entries()) == items  # the dump keeps the given order, as OpenZeppelin


@given(payouts(), st.data())
def test_a_tampered_amount_does_not_verify(payouts_in: dict[str, int], data: Any) -> None:
    tree = PayoutTree.build(payouts_in)
    account = data.draw(st.sampled_from(sorted(payouts_in)))
    amount = payouts_in[account]
    other = data.draw(st.integers(0, UINT256_MAX).filter(lambda value: value != amount))
    assert not verify_proof(tree.root, leaf_hash(account, other), tree.proof(account))


@given(payouts(), st.data())
def test_a_tampered_proof_does_not_verify(payouts_in: dict[str, int], data: Any) -> None:
    tree = PayoutTree.build(payouts_in)
    account = data.draw(st.sampled_from(sorted(payouts_in)))
    leaf = leaf_hash(account, payouts_in[account])
    proof = tree.proof(account)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 7))
        tampered = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
        assert not verify_proof(tree.root, leaf, tampered)
        assert not verify_proof(tree.root, leaf, proof[:-1])
    assert not verify_proof(tree.root, leaf, [*proof, leaf])
    assert not verify_proof(_flip(tree.root), leaf, proof)


@given(payouts(), addresses)
def test_an_account_outside_the_tree_cannot_borrow_a_proof(
    payouts_in: dict[str, int], stranger: str
) -> None:
    tree = PayoutTree.build(payouts_in)
    account, amount = next(iter(payouts_in.items()))
    if stranger not in payouts_in:
        assert not verify_proof(tree.root, leaf_hash(stranger, amount), tree.proof(account))


@given(payouts(max_size=20))
def test_dump_round_trips(payouts_in: dict[str, int]) -> None:
    tree = PayoutTree.build(payouts_in)
    assert PayoutTree.from_json(tree.to_json()) == tree
    assert PayoutTree.load(json.loads(tree.to_json(indent=2))) == tree


@given(addresses, amounts)
def test_leaf_hash_depends_on_both_fields(account: str, amount: int) -> None:
    assert leaf_hash(account, amount) != leaf_hash(account, amount - 1)
