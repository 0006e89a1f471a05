"""Nodes fetch what a buyer names only by content address (or inline data:) unless their
operator allows more, never because of a request, and never quote what a URI served."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from compute.policy import Policy
from market.chain import Chain
from market.escrow.documents import DocumentError, FetchRefused, fetch
from market.sandbox import Sandbox
from market.storage import EmbeddedStore, uri_for
from nodes.heavy import HeavyNode
from nodes.jobs import JobSpecError, JobSpecs, proposal_for
from nodes.light import LightNode, LightService, LightState, LocalData
from nodes.service import Server, create_app
from nodes.store import Store
from nodes.valuation import BlobCache

SECRET = "s3cret-internal-value"
"""What an internal service or a local file holds; no refusal may show it."""


class Internal:
    """An internal HTTP service on loopback that records every request it gets."""

    def __init__(self) -> None:
        hits: list[str] = []
        self.hits = hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                hits.append(self.path)
                if self.path == "/error":
                    self.send_response(500, f"{SECRET} in the reason")
                    body = f"{SECRET} in the body".encode()
                elif self.path.startswith("/to-"):  # /to-ftp, /to-file
                    self.send_response(302)
                    self.send_header("Location", self.path[4:] + "://127.0.0.1/etc/hostname")
                    body = b""
                else:
                    self.send_response(200)
                    body = f'{{"kind": "{SECRET}", "token": "{SECRET}"}}'.encode()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def internal() -> Iterator[Internal]:
    service = Internal()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "node-secrets.json"
    path.write_text(f'{{"kind": "{SECRET}", "private_key": "{SECRET}"}}')
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MARKET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MARKET_IPFS_API", raising=False)
    return tmp_path / "home"


def test_file_and_internal_http_uris_are_refused_by_default(internal, secret_file):
    for uri, scheme in (
        (secret_file.as_uri(), "file"),
        (f"{internal.url}/admin", "http"),
        ("https://169.254.169.254/latest/meta-data/", "https"),
    ):
        with pytest.raises(FetchRefused) as refused:
            fetch(uri)
        message = str(refused.value)
        assert uri in message
        assert "only content-addressed" in message and "ipfs://<cid>" in message
        assert "publish it by content address" in message
        assert f"--allow-fetch {scheme}" in message  # what the operator can do
    assert internal.hits == []  # nothing was requested


def test_content_addressed_and_data_uris_are_fetched_and_nothing_else(home, internal):
    store = EmbeddedStore(home / "storage")
    assert fetch(uri_for(store.put(b"a proposal"))) == b"a proposal"
    assert fetch("data:,a%20proposal") == b"a proposal"
    assert fetch("data:application/json;base64,e30=") == b"{}"
    with pytest.raises(FetchRefused, match="committee: URI names a finalized job's result"):
        fetch("committee:/jobs/1/result")  # only with the job's committee endpoints
    with pytest.raises(FetchRefused) as refused:
        fetch("gopher://127.0.0.1/")
    assert "--allow-fetch" not in str(refused.value)  # not a scheme an operator may allow
    # A committee's result document comes from the members' registered endpoints.
    assert fetch("committee:/page", endpoints=[internal.url]) == (
        f'{{"kind": "{SECRET}", "token": "{SECRET}"}}'.encode()
    )


def test_an_operator_may_allow_file_and_http(internal, secret_file):
    assert SECRET.encode() in fetch(secret_file.as_uri(), allow={"file"})
    assert SECRET.encode() in fetch(f"{internal.url}/page", allow={"http"})
    with pytest.raises(FetchRefused):  # allowing one scheme allows no other
        fetch(secret_file.as_uri(), allow={"http"})


def test_fetch_errors_never_echo_what_was_served(internal):
    with pytest.raises(DocumentError) as failed:
        fetch(f"{internal.url}/error", allow={"http"})
    assert "HTTP 500" in str(failed.value) and SECRET not in str(failed.value)
    # An allowed http:// URI may not redirect to a scheme that is not allowed.
    with pytest.raises(FetchRefused, match="not fetching ftp://127.0.0.1/etc/hostname"):
        fetch(f"{internal.url}/to-ftp", allow={"http"})
    with pytest.raises(DocumentError, match="HTTP 302"):  # urllib never follows to file:
        fetch(f"{internal.url}/to-file", allow={"http", "file"})


# ------------------------------------------------------------------ nodes on a chain
@pytest.fixture
def market() -> Iterator[Sandbox]:
    with Chain.embedded() as chain:
        yield Sandbox.deploy(chain)


def _post(market: Sandbox, members, spec_uri: str) -> int:
    """A job naming `spec_uri`, drawn, every member accepted (light nodes may submit)."""
    buyer = market.account(10_000 * 10**18)
    params = dataclasses.replace(market.params(members), spec_uri=spec_uri)
    job_id = market.escrow.post_job(buyer, params)
    market.draw(job_id)
    for member in members:
        market.escrow.accept_job(member, job_id)
    assert market.escrow.committee_ready(job_id)
    return job_id


def _light(market: Sandbox, tmp_path: Path, name: str, allow=()) -> LightService:
    owner, dataset_id = market.dataset()
    return LightService(
        LightNode(owner, market.escrow, market.staking),
        [LocalData(dataset_id, lambda: pytest.fail("the light node read its data"))],
        Policy.default(),
        LightState(str(tmp_path / f"{name}.db")),
        blobs=BlobCache(allow),
    )


def test_a_light_node_refuses_file_and_internal_http_spec_uris(
    market, tmp_path, internal, secret_file
):
    members = market.heavy_nodes(3)
    jobs = {
        _post(market, members, secret_file.as_uri()): "file",
        _post(market, members, f"{internal.url}/admin"): "http",
    }
    decisions = _light(market, tmp_path, "default").poll()
    assert {job for job, _, _, _ in decisions} == set(jobs)
    for job, _, status, reason in decisions:
        assert status == "refused"
        assert "cannot fetch its proposal" in reason and "content address" in reason
        assert f"--allow-fetch {jobs[job]}" in reason
    assert internal.hits == []

    # Allowed by its operator, the node fetches them, and still refuses what is not the
    # posted proposal without quoting it.
    decisions = _light(market, tmp_path, "allowing", allow={"file", "http"}).poll()
    assert len(decisions) == 2 and internal.hits == ["/admin"]
    for _, _, status, reason in decisions:
        assert status == "refused" and "not the proposal the job posted" in reason
        assert SECRET not in reason


def test_proposal_errors_never_quote_a_fetched_document(market, internal, secret_file):
    members = market.heavy_nodes(3)
    for uri in (secret_file.as_uri(), f"{internal.url}/page", f"{internal.url}/error"):
        view = market.escrow.job(_post(market, members, uri))
        with pytest.raises(JobSpecError) as refused:
            proposal_for(market.escrow, view, allow={"file", "http"})
        assert SECRET not in str(refused.value)


def test_a_heavy_node_fetches_on_no_request(market, tmp_path, internal):
    """Every endpoint, for a job the node was drawn for but has not looked at and for one
    that does not exist, answers 404 without fetching; only the node's own look at the chain
    fetches (here allowed to fetch http://, to show it would)."""
    members = market.heavy_nodes(2)
    account = market.account(market.config.min_heavy_node_stake)
    market.staking.register_heavy_node(
        account, market.config.min_heavy_node_stake, "http://127.0.0.1:1", bytes(32)
    )
    committee = sorted([*members, account], key=lambda a: int(a.address, 16))
    specs = JobSpecs(market.escrow, allow={"http"})
    node = HeavyNode(account, market.chain, market.deployment, Store(tmp_path / "node.db"),
                     specs, valuation_for=specs.valuation)  # fmt: skip
    node.tick()  # its first look at the chain: nothing posted yet
    server = Server(create_app(node))
    url = server.start()
    try:
        buyer = market.account(10_000 * 10**18)
        params = dataclasses.replace(market.params(committee), spec_uri=f"{internal.url}/spec")
        job_id = market.escrow.post_job(buyer, params)
        market.draw(job_id)
        assert account.address in market.escrow.job(job_id).committee
        sig = "0x" + "11" * 65
        dataset = "0x" + "ab" * 32
        bodies = {
            "submissions": {
                "job": job_id,
                "dataset": dataset,
                "recipient": 1,
                "nonce": 1,
                "sealed": "AAAA",
                "signature": sig,
                "participation_bps": 0,
                "participation": sig,
            },  # fmt: skip
            "peer": {"payload": {"kind": "agreement", "job": str(job_id)}, "signature": sig},
            "signatures": {
                "digest": "0x" + "22" * 32,
                "signer": "0x" + "33" * 20,
                "signature": sig,
            },  # fmt: skip
            "scores": {"report": {"job": job_id, "scores": {}}, "signature": sig},
        }
        for job in (job_id, job_id + 1):
            for path, body in bodies.items():
                response = requests.post(f"{url}/jobs/{job}/{path}", json=body, timeout=10)
                assert response.status_code == 404, (path, response.text)
            for path in ("", "/valuation", f"/payloads/{dataset}", "/result"):
                response = requests.get(f"{url}/jobs/{job}{path}", timeout=10)
                assert response.status_code == 404, (path, response.text)
        assert internal.hits == []

        time.sleep(1.05)  # the node looks at the chain at most once a second
        node.tick()  # drawn for the job: it fetches the proposal (allowed here) and refuses it
        assert internal.hits == ["/spec"]
        assert account.address not in market.escrow.job(job_id).accepted
    finally:
        server.stop()
        node.store.close()


def test_the_nodes_commands_take_allow_fetch():
    from market.cli.main import main as cli

    for command in ("heavy", "light"):
        result = CliRunner().invoke(cli, ["node", command, "--help"])
        assert result.exit_code == 0, result.output
        assert "--allow-fetch [http|https|file]" in result.output
        assert "content-addressed ipfs://" in result.output
        result = CliRunner().invoke(cli, ["node", command, "--allow-fetch", "gopher"])
        assert result.exit_code == 2 and "gopher" in result.output


def test_dataset_metadata_goes_on_chain_by_content_address(home, tmp_path):
    from nodes.datasets import register_dataset

    table = tmp_path / "clinic.csv"
    table.write_text("age,bp\n" + "".join(f"{30 + i},{120 + i}\n" for i in range(20)))
    local = register_dataset(table, "clinic", mock_count=5)
    uri = local.metadata_uri
    assert uri.startswith("ipfs://") and uri == local.publish_metadata()  # the same address
    meta = json.loads(fetch(uri))  # what any node reads, checked against the address
    assert meta["dataset"] == "0x" + local.dataset_id.hex() and meta["rows"] == 20
    assert [c["name"] for c in meta["schema"]] == ["age", "bp"]
    assert meta["mock"]["kind"] == "synthetic" and meta["mock"]["epsilon"] == 0.0
    assert fetch(meta["mock"]["uri"]) == local.mock_path.read_bytes()
    assert str(tmp_path) not in json.dumps(meta)  # nothing of the provider's machine
