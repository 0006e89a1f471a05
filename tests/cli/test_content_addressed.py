"""No local path reaches the chain or a peer: after a walkthrough through the real `market`
entry point (register, stake, post) every URI recorded on chain is `ipfs://`, and a node with
no access to the poster's disk (another `$MARKET_HOME`, empty) fetches each one, and every URI
inside what it fetched, from the IPFS node both reach (`MARKET_IPFS_API`, here the JS daemon).
Without that node the other home has nothing to read them from: the test is not passing
because the two share a disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from market.storage import IpfsDaemonError
from market.storage.daemon import JsIpfsDaemon, find_jsipfs
from tests.cli.conftest import Cli

pytestmark = pytest.mark.ipfs


@pytest.fixture
def ipfs_api() -> Iterator[str]:
    try:
        find_jsipfs()
    except IpfsDaemonError as exc:
        pytest.skip(f"needs the npm package `ipfs` (make install): {exc}")
    with JsIpfsDaemon() as daemon:
        assert daemon.api is not None
        yield daemon.api


def _uris(document: Any) -> Iterator[str]:
    """Every string inside a JSON document that looks like a URI."""
    if isinstance(document, dict):
        for value in document.values():
            yield from _uris(value)
    elif isinstance(document, list):
        for value in document:
            yield from _uris(value)
    elif isinstance(document, str) and "://" in document:
        yield document


def test_walkthrough_records_only_fetchable_ipfs_uris(
    embedded_cli: Cli, tmp_path: Path, ipfs_api: str, monkeypatch: pytest.MonkeyPatch
):
    from click.testing import CliRunner

    from market.cli.main import main

    env = embedded_cli.env(MARKET_IPFS_API=ipfs_api)

    def market(*args: str, net: bool = True) -> str:  # in process: without a start-up each
        result = CliRunner().invoke(main, [*args, *(embedded_cli.network if net else [])], env=env)
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    for alias in ("buyer", "provider", "node0", "node1", "node2"):
        market("wallet", "new", alias, net=False)
        market("faucet", "--account", alias, "--amount", "2000")
    for i in range(3):
        market("heavy", "register", "--endpoint", f"http://127.0.0.1:{9200 + i}",
               "--stake", "1000", "--account", f"node{i}")  # fmt: skip
    data = tmp_path / "clinic.csv"
    data.write_text("age,bp,sex\n34,120,F\n51,135,M\n47,128,F\n62,141,M\n")
    market("dataset", "register", str(data), "--name", "clinic", "--bounds", "bp=0:250",
           "--categories", "sex=F,M", net=False)  # fmt: skip
    market("dataset", "register", str(data), "--name", "clinic-dp", "--bounds", "bp=0:250",
           "--mock", "dp", "--mock-epsilon", "1", net=False)  # fmt: skip
    for name in ("clinic", "clinic-dp"):
        market("dataset", "stake", name, "--amount", "50", "--account", "provider")
    spec = tmp_path / "spec.json"
    spec.write_text(
        market("bounty", "template", "--column", "bp", "--lo", "0", "--hi", "250", net=False)
    )
    job = json.loads(market("bounty", "post", str(spec), "--budget", "500", "--deadline", "2h",
                            "--min-participants", "1",
                            "--account", "buyer", "--json"))  # fmt: skip
    assert job["spec_uri"].startswith("ipfs://")

    # What the chain recorded (anyone can read it).
    from market.escrow import EscrowClient
    from market.home import Home
    from market.network import open_network
    from market.staking import StakingClient

    with open_network(Home(embedded_cli.home), "embedded") as net:
        staking = StakingClient(net.chain, net.deployment)
        escrow = EscrowClient(net.chain, net.deployment)
        start = net.deployment.block
        staked = [
            e["metadataURI"] for e in net.chain.events(staking.contract, "DatasetStaked", start)
        ]
        posted = [
            e["params"]["specURI"] for e in net.chain.events(escrow.contract, "JobPosted", start)
        ]
    assert len(staked) == 2 and posted == [job["spec_uri"]]
    on_chain = staked + posted
    assert all(uri.startswith("ipfs://") for uri in on_chain), on_chain

    # Another node: its own empty home, no access to the poster's files.
    from market.escrow.documents import DocumentError, fetch

    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("MARKET_HOME", str(other))
    monkeypatch.delenv("MARKET_IPFS_API", raising=False)
    with pytest.raises(DocumentError, match="cannot fetch"):
        fetch(on_chain[0])  # the embedded store of an empty home has none of it
    monkeypatch.setenv("MARKET_IPFS_API", ipfs_api)
    seen: dict[str, bytes] = {}
    pending = list(on_chain)
    while pending:
        uri = pending.pop()
        assert uri.startswith("ipfs://"), uri
        if uri in seen:
            continue
        seen[uri] = fetch(uri)  # checked against its content address
        try:
            pending.extend(_uris(json.loads(seen[uri])))
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass  # mock rows (CSV)
    metadata = [json.loads(seen[u]) for u in staked]
    assert sorted(m["mock"]["kind"] for m in metadata) == ["dp", "synthetic"]
    assert all(m["mock"]["uri"] in seen for m in metadata)
    assert len(seen) == 5  # two metadata documents, their two mock tables, one proposal
    for raw in seen.values():
        assert str(tmp_path).encode() not in raw and b"file:" not in raw
