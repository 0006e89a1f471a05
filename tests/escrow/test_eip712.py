"""EIP-712: Python digests equal the shared vectors (made by eth-account's generic encoder) and the
contract's own `resultDigest` / `participationDigest` / `abortDigest`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.chain import Chain, deploy_market
from market.escrow import Domain, Result, Slash
from market.escrow.eip712 import (
    EIP712_TYPES,
    abort_digest,
    participation_digest,
    recover,
    result_digest,
    result_message,
    sign_digest,
)
from tests.contracts.world import World

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "eip712.json").read_text())
DOMAIN = Domain(VECTORS["domain"]["chainId"], VECTORS["domain"]["verifyingContract"])


def _b(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _result(message: dict) -> Result:
    return Result(
        job_id=int(message["jobId"]),
        result_hash=_b(message["resultHash"]),
        result_uri=message["resultURI"],
        payout_root=_b(message["payoutRoot"]),
        payout_total=int(message["payoutTotal"]),
        slashed_to_payouts=int(message["slashedToPayouts"]),
        participants=int(message["participants"]),
        slashes=tuple(Slash(_b(s["datasetId"]), int(s["amount"])) for s in message["slashes"]),
    )


@pytest.mark.parametrize("case", VECTORS["result"])
def test_result_digest_vectors(case):
    assert result_digest(DOMAIN, _result(case["message"])) == _b(case["digest"])


@pytest.mark.parametrize("case", VECTORS["participation"])
def test_participation_digest_vectors(case):
    m = case["message"]
    digest = participation_digest(DOMAIN, int(m["jobId"]), _b(m["datasetId"]), m["maxSlashBps"])
    assert digest == _b(case["digest"])


@pytest.mark.parametrize("case", VECTORS["abort"])
def test_abort_digest_vectors(case):
    m = case["message"]
    assert abort_digest(DOMAIN, int(m["jobId"]), m["reason"]) == _b(case["digest"])


@pytest.mark.anvil
def test_contract_digests_equal_the_vectors():
    """Deploys with the vectors' deployer key on a fresh Anvil (chain id 31337), so the
    marketplace lands at the vectors' verifying contract, and asks the contract."""
    with Chain.anvil() as chain:
        deployer = Account.from_key(_b(VECTORS["deployerKey"]))
        chain.fund(deployer.address, 10**20)
        deployment = deploy_market(chain, deployer)
        assert deployment.marketplace == DOMAIN.verifying_contract
        fns = chain.contract("Marketplace", deployment.marketplace).functions
        for case in VECTORS["result"]:
            onchain = chain.call(fns.resultDigest(_result(case["message"]).as_abi()))
            assert onchain == _b(case["digest"])
        for case in VECTORS["participation"]:
            m = case["message"]
            onchain = chain.call(
                fns.participationDigest(int(m["jobId"]), _b(m["datasetId"]), m["maxSlashBps"])
            )
            assert onchain == _b(case["digest"])
        for case in VECTORS["abort"]:
            m = case["message"]
            assert chain.call(fns.abortDigest(int(m["jobId"]), m["reason"])) == _b(case["digest"])


bytes32 = st.binary(min_size=32, max_size=32)
results = st.builds(
    Result,
    job_id=st.integers(0, 2**256 - 1),
    result_hash=bytes32,
    result_uri=st.text(max_size=40),
    payout_root=bytes32,
    payout_total=st.integers(0, 2**256 - 1),
    participants=st.integers(0, 2**32 - 1),
    slashed_to_payouts=st.integers(0, 2**256 - 1),
    slashes=st.lists(
        st.builds(Slash, dataset_id=bytes32, amount=st.integers(0, 2**256 - 1)),
        max_size=4,
        unique_by=lambda s: s.dataset_id,
    ).map(tuple),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(result=results, job_id=st.integers(0, 2**64), bps=st.integers(0, 2**16 - 1))
def test_contract_and_python_agree_on_random_messages(world: World, result, job_id, bps):
    escrow = world.escrow
    assert escrow.result_digest(result) == result_digest(escrow.domain, result)
    dataset_id = result.result_hash
    assert escrow.participation_digest(job_id, dataset_id, bps) == participation_digest(
        escrow.domain, job_id, dataset_id, bps
    )
    assert escrow.abort_digest(job_id, result.result_uri) == abort_digest(
        escrow.domain, job_id, result.result_uri
    )


@given(result=results)
@settings(max_examples=25, deadline=None)
def test_signatures_match_eth_account_typed_data_signing(result):
    account = Account.from_key(b"\x01" * 32)
    full = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Result": EIP712_TYPES["Result"],
            "Slash": EIP712_TYPES["Slash"],
        },
        "primaryType": "Result",
        "domain": DOMAIN.as_json(),
        "message": result_message(result),
    }
    theirs = account.sign_typed_data(full_message=full).signature
    ours = sign_digest(account, result_digest(DOMAIN, result))
    assert ours == bytes(theirs)
    assert recover(result_digest(DOMAIN, result), ours) == account.address


MERKLE = json.loads((Path(__file__).parents[1] / "vectors" / "merkle.json").read_text())


def test_contract_leaf_hashes_equal_the_merkle_vectors(world: World):
    for case in MERKLE["cases"]:
        for leaf in case["leaves"][:4]:
            onchain = world.escrow.payout_leaf(leaf["account"], int(leaf["amount"]))
            assert onchain == _b(leaf["leafHash"])


def test_contract_domain_matches_python(world: World):
    fields = world.chain.call(world.escrow.contract.functions.eip712Domain())
    _, name, version, chain_id, contract, _, _ = fields
    expected = world.escrow.domain.as_json()
    assert (name, version, chain_id, contract) == (
        expected["name"], expected["version"], expected["chainId"], expected["verifyingContract"]
    )  # fmt: skip
