"""The buyer's valuation commands: `market valuation publish` (train on the buyer's own tables,
publish the model, the public CKKS context and Enc(q) by content address, keep the secret
context in a private file, print the proposal's terms) and `market valuation report` (decrypt
the participants' scores and report them to the committee), the latter against real heavy and
light nodes over HTTP on an in-process chain."""

from __future__ import annotations

import hashlib
import json
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from click.testing import CliRunner

from compute.kinds import ValuationSpec
from compute.policy import Policy
from compute.proposal import BlobRef, parse_proposal
from market.chain import TOKEN, Chain
from market.cli import valuation_cmds
from market.cli.common import format_time
from market.cli.main import main
from market.cli.progress import Progress
from market.escrow.documents import ResultDocument, fetch
from market.home import Home
from market.sandbox import Sandbox
from market.valuation.tip.data import make_market
from market.valuation.tip.he import PlainBackend, TenSealBuyer, load_buyer
from market.valuation.tip.job import TipTerms
from market.valuation.tip.release import ModelRelease, score_rows
from market.wallet import Wallet
from nodes.jobs import JobSpecs
from nodes.light import LightNode, LightService, LightState, LocalData
from nodes.valuation import BlobCache
from tests.cli.conftest import PASSWORD, Cli
from tests.nodes.harness import Committee

FEATURES = ["a", "b", "c"]


def _table(rng: np.random.Generator, n: int, classes: int = 3) -> pd.DataFrame:
    x = rng.standard_normal((n, len(FEATURES)))
    y = np.digitize(x[:, 0] + 0.5 * x[:, 1], np.linspace(-1, 1, classes - 1))
    return pd.DataFrame(x * [10.0, 2.0, 0.5] + [50.0, -3.0, 7.0], columns=FEATURES).assign(y=y)


@pytest.fixture
def tables(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(4)
    train, evaluation = tmp_path / "train.csv", tmp_path / "eval.csv"
    _table(rng, 60).to_csv(train, index=False)
    _table(rng, 30).to_csv(evaluation, index=False)
    return train, evaluation


def test_publish_prints_terms_stores_blobs_and_keeps_the_secret_private(
    embedded_cli: Cli, tables: tuple[Path, Path], tmp_path: Path, monkeypatch: Any
) -> None:
    cli, (train, evaluation) = embedded_cli, tables
    proposal_file = tmp_path / "proposal.json"
    summary: Any = cli.json(
        "valuation", "publish", "--train", str(train), "--eval", str(evaluation),
        "--features", ",".join(FEATURES), "--label", "y", "--k", "64", "--seed", "9",
        "--decrypt-window", "600", "--proposal", str(proposal_file),
    )  # fmt: skip

    # The terms are what a proposal's "valuation" holds.
    spec = ValuationSpec.model_validate(summary["valuation"])
    terms = TipTerms.from_json(spec.tip)
    assert (terms.k, terms.projection_seed, terms.backend) == (64, 9, "tenseal-ckks")
    assert terms.model == {"kind": "softmax", "n_features": 3, "n_classes": 3}
    assert spec.features == FEATURES and spec.label == "y" and spec.decrypt_window == 600
    assert summary["classes"] == 3 and summary["rows"] == {"train": 60, "eval": 30}

    # Each blob is in the content-addressed store, served by its ipfs:// URI, and is what the
    # nodes fetch and check (size and SHA-256).
    monkeypatch.setenv("MARKET_HOME", str(cli.home))
    blobs = BlobCache()
    for name in ("model", "context", "query"):
        ref: BlobRef = getattr(spec, name)
        assert ref.uri.startswith("ipfs://")
        raw = fetch(ref.uri)
        assert len(raw) == ref.size and hashlib.sha256(raw).hexdigest() == ref.sha256
        assert blobs.get(ref) == raw
    release = ModelRelease.from_bytes(blobs.get(spec.model))
    x_train = pd.read_csv(train)[FEATURES].to_numpy()
    np.testing.assert_allclose(release.mean, x_train.mean(axis=0))
    np.testing.assert_allclose(release.scale, x_train.std(axis=0))

    # The secret context: mode 0600 under $MARKET_HOME/valuation, named by the public context's
    # SHA-256; reloaded, it decrypts a provider's scores, equal to the plaintext influence.
    secret = Path(summary["secret"])
    assert secret == cli.home / "valuation" / f"{spec.context.sha256}.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    buyer = load_buyer(secret.read_bytes())
    assert isinstance(buyer, TenSealBuyer)
    assert hashlib.sha256(buyer.public_context()).hexdigest() == spec.context.sha256
    provider = _table(np.random.default_rng(5), 40)
    x, y = provider[FEATURES].to_numpy(), provider["y"].to_numpy()
    payload = score_rows(
        terms, blobs.get(spec.model), blobs.get(spec.context), blobs.get(spec.query), x, y
    )
    decrypted = buyer.decrypt_scores(payload)
    # The same training and query in plaintext (the command is deterministic given the seed).
    read = [valuation_cmds.read_table(p, FEATURES, "y", None) for p in (train, evaluation)]
    plain, _ = valuation_cmds.publish_valuation(
        *read, classes=3, k=64, seed=9, backend=PlainBackend()
    )
    assert plain.terms.params_sha256 == terms.params_sha256
    expected = plain.buyer.decrypt_scores(
        score_rows(plain.terms, plain.model, plain.context, plain.query, x, y)
    )
    np.testing.assert_allclose(decrypted, expected, rtol=1e-5, atol=1e-4)

    # The whole proposal it wrote is valid once `bounty post` fills in money, time, committee.
    template = json.loads(proposal_file.read_text())
    assert template["valuation"] == summary["valuation"]
    proposal = parse_proposal(
        {**template, "economics": {**template["economics"], "budget": 10**18},
         "deadline": 2_000_000_000, "committee_size": 3,
         "quorum": 2}
    )  # fmt: skip
    assert proposal.kind == "valuation" and proposal.valuation == spec

    # An existing secret file is never overwritten (nor an existing proposal file).
    again = ("valuation", "publish", "--train", str(train), "--eval", str(evaluation),
             "--features", ",".join(FEATURES), "--label", "y", "--k", "64")  # fmt: skip
    line = cli.fails(1, *again, "--out", str(secret))
    assert "already exists" in line and "never overwritten" in line
    assert load_buyer(secret.read_bytes()).public_context() == buyer.public_context()
    assert "already exists" in cli.fails(1, *again, "--proposal", str(proposal_file))
    # --out DIR: the secret goes in that directory, by the same naming.
    keep = tmp_path / "keys"
    keep.mkdir()
    moved: Any = cli.json(*again, "--out", str(keep))
    assert Path(moved["secret"]).parent == keep
    assert stat.S_IMODE(Path(moved["secret"]).stat().st_mode) == 0o600


def _invoke(home: Path, *args: str) -> Any:
    runner = CliRunner(mix_stderr=False)
    env = {"MARKET_HOME": str(home), "MARKET_PASSWORD": PASSWORD,
           "MARKET_KEYSTORE_SCRYPT_N": "1024", "ETH_RPC_URL": "", "MARKET_ACCOUNT": ""}  # fmt: skip
    return runner.invoke(main, list(args), env=env, catch_exceptions=False)


BAD_INPUTS = [
    ("features a,b,z", {}, ["--features", "a,b,z"], "train.csv lacks column z (it has a, b, c, y)"),
    ("no label column", {}, ["--label", "target"], "lacks column target"),
    ("a text feature", {"b": "abc"}, [], "feature 'b' must be numeric; data row 2 holds 'abc'"),
    ("an empty feature", {"c": ""}, [], "feature 'c' must be numeric; data row 2 is empty"),
    ("an infinite feature", {"a": "inf"}, [], "holds 'inf', not a finite number"),
    ("a fractional label", {"y": "1.5"}, [], "integer class labels 0, 1, 2, ...; data row 2 holds"),
    ("a negative label", {"y": "-1"}, [], "data row 2 holds '-1'"),
    ("a text label", {"y": "cat"}, [], "data row 2 holds 'cat'"),
    ("a label above --classes", {"y": "5"}, ["--classes", "3"], "class 5 in data row 2"),
    ("the label among features", {}, ["--features", "a,y"], "is also in --features"),
    ("a repeated feature", {}, ["--features", "a,b,a"], "names a column twice: a"),
    ("an empty feature name", {}, ["--features", "a,,b"], "comma-separated column names"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "cell", "extra", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_publish_explains_bad_tables(
    tmp_path: Path, case: str, cell: dict[str, str], extra: list[str], message: str
) -> None:
    frame = _table(np.random.default_rng(1), 10).astype(str)
    for column, value in cell.items():
        frame.loc[1, column] = value
    train = tmp_path / "train.csv"
    frame.to_csv(train, index=False)
    evaluation = tmp_path / "eval.csv"
    _table(np.random.default_rng(2), 10).to_csv(evaluation, index=False)
    options = {"--features": "a,b,c", "--label": "y"}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        options[flag] = value
    args = [a for pair in options.items() for a in pair]
    result = _invoke(tmp_path / "home", "valuation", "publish", "--train", str(train),
                     "--eval", str(evaluation), "--k", "8", *args)  # fmt: skip
    assert result.exit_code == 1, (case, result.stdout, result.stderr)
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "home" / "valuation").exists() or not any(
        (tmp_path / "home" / "valuation").iterdir()
    )


def test_publish_refuses_empty_and_single_class_tables(tmp_path: Path) -> None:
    empty, header, one_class = (tmp_path / n for n in ("empty.csv", "header.csv", "one.csv"))
    empty.write_text("")
    header.write_text("a,b,c,y\n")
    one_class.write_text("a,b,c,y\n1,2,3,0\n2,3,4,0\n")
    for train, message in ((empty, "is empty"), (header, "has a header but no rows"),
                           (one_class, "one class only")):  # fmt: skip
        result = _invoke(
            tmp_path / "home", "valuation", "publish", "--train", str(train),
            "--eval", str(one_class), "--features", "a,b,c", "--label", "y",
        )  # fmt: skip
        assert result.exit_code == 1 and message in result.stderr, result.stderr


# ------------------------------------------------------------------ end to end, in process
# The embedded chain, the heavy nodes and the light nodes live in this process (the chain is
# in memory, so a subprocess could not reach it): the commands run through click's CliRunner,
# with `--network` opening this chain.
BUDGET_DATA = 1_000
DECRYPT_WINDOW = 600
MAX_SLASH_BPS = 2_000


@pytest.fixture
def committee(tmp_path: Path) -> Iterator[Committee]:
    with Chain.embedded() as chain:
        sandbox = Sandbox.deploy(chain)
        specs = JobSpecs(sandbox.escrow)
        c = Committee(sandbox, tmp_path, config_for=specs, valuation_for=specs.valuation)
        c.start(3)
        try:
            yield c
        finally:
            c.stop()


def _csv(path: Path, x: np.ndarray, y: np.ndarray, features: list[str]) -> Path:
    pd.DataFrame(x, columns=features).assign(digit=y).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_a_buyer_publishes_posts_and_reports_with_the_cli(
    tmp_path: Path, committee: Committee, monkeypatch: Any
) -> None:
    sandbox = committee.market
    home = tmp_path / "home"
    for name, value in (("MARKET_HOME", str(home)), ("MARKET_PASSWORD", PASSWORD),
                        ("MARKET_KEYSTORE_SCRYPT_N", "1024")):  # fmt: skip
        monkeypatch.setenv(name, value)  # the light nodes read the blobs from this home too

    @contextmanager
    def this_chain(_home: Home, _name: str, _rpc_url: str | None) -> Iterator[Any]:
        yield SimpleNamespace(chain=sandbox.chain, deployment=sandbox.deployment)

    monkeypatch.setattr("market.cli.common.open_network", this_chain)
    buyer, stranger = sandbox.account(10 * BUDGET_DATA * TOKEN), sandbox.account()
    wallet = Wallet(Home(home).accounts)
    wallet.import_private_key("buyer", buyer.key.hex(), PASSWORD)
    wallet.import_private_key("stranger", stranger.key.hex(), PASSWORD)

    # The buyer's own tables, unstandardized, as it would hold them.
    data = make_market("digits", seed=3)
    features = [f"px{i}" for i in range(data.n_features)]
    raw = {
        n: x * data.scale + data.mean for n, (x, _) in (("train", data.train), ("eval", data.eval))
    }
    train = _csv(tmp_path / "train.csv", raw["train"], data.train[1], features)
    evaluation = _csv(tmp_path / "eval.csv", raw["eval"], data.eval[1], features)
    proposal_file = tmp_path / "proposal.json"
    published = _invoke(
        home, "valuation", "publish", "--train", str(train), "--eval", str(evaluation),
        "--features", ",".join(features), "--label", "digit", "--classes", "10", "--k", "256",
        "--seed", "11", "--decrypt-window", str(DECRYPT_WINDOW), "--proposal", str(proposal_file),
        "--max-slash-bps", str(MAX_SLASH_BPS), "--json",
    )  # fmt: skip
    assert published.exit_code == 0, published.stderr
    summary = json.loads(published.stdout)
    posted = _invoke(
        home, "bounty", "post", str(proposal_file), "--budget", str(BUDGET_DATA),
        "--deadline", "1h", "--fee-bps", "500", "--account", "buyer", "--json",
    )  # fmt: skip
    assert posted.exit_code == 0, posted.stderr
    job = json.loads(posted.stdout)
    job_id, members = job["job"], job["committee"]
    sandbox.wait_ready(job_id)  # the drawn members accept before providers send anything

    # Five providers of different quality score their rows under the buyer's key.
    policy = Policy(allowed_kinds=frozenset({"valuation"}), max_slash_bps=MAX_SLASH_BPS)
    providers: dict[str, str] = {}
    for provider in data.providers:
        owner, dataset_id = sandbox.dataset(stake=100 * TOKEN)
        frame = pd.DataFrame(provider.x * data.scale + data.mean, columns=features)
        frame = frame.assign(digit=provider.y)
        service = LightService(
            LightNode(owner, sandbox.escrow, sandbox.staking),
            [LocalData(dataset_id, lambda frame=frame: frame)],
            policy,
            LightState(str(tmp_path / f"light-{provider.name}.db")),
            clock=committee.clock,
        )
        ((_, _, status, reason),) = service.poll()
        assert status == "submitted", reason
        providers[provider.name] = "0x" + dataset_id.hex()

    # `bounty wait` says where the job is on stderr (here one look: --timeout 0).
    wait = ("bounty", "wait", str(job_id), "--poll", "0.1")
    look = _invoke(home, *wait, "--timeout", "0")
    assert look.exit_code == 1 and look.stdout == ""
    assert "accepted by 3 of 3 committee members; submissions close" in look.stderr

    report = ("valuation", "report", str(job_id))
    # Before the committee has agreed on the participants: retry later.
    early = _invoke(home, *report, "--account", "buyer")
    assert early.exit_code == 1, early.stdout
    assert f"job {job_id} is not ready for a report" in early.stderr
    assert "retry once it has" in early.stderr
    # Only the job's buyer may report, and that is checked before anything is posted.
    wrong = _invoke(home, *report, "--account", "stranger")
    assert wrong.exit_code == 1 and "only the job's buyer can report" in wrong.stderr
    # A secret that is not the job's is refused.
    other = tmp_path / "other.secret"
    other.write_bytes(PlainBackend().create_buyer(64).to_bytes(secret=True))
    mismatched = _invoke(home, *report, "--account", "buyer", "--secret", str(other))
    assert mismatched.exit_code == 1 and "is not the secret of job" in mismatched.stderr

    # Past the deadline, once the committee agreed: the buyer reports (the secret is found in
    # $MARKET_HOME/valuation by the job's context).
    endpoint = sandbox.staking.heavy_node(members[0]).endpoint
    committee.clock.advance(sandbox.escrow.job(job_id).deadline - committee.clock() + 1)
    limit = time.monotonic() + 60
    while requests.get(f"{endpoint}/jobs/{job_id}/valuation", timeout=10).status_code != 200:
        assert time.monotonic() < limit, "the committee never agreed on the participants"
        time.sleep(0.1)
    look = _invoke(home, *wait, "--timeout", "0")
    assert look.exit_code == 1, look.stderr
    due = sandbox.escrow.job(job_id).deadline + DECRYPT_WINDOW
    assert "submissions closed at the deadline" in look.stderr
    assert f"waiting for the buyer's report until {format_time(due)}" in look.stderr
    reported = _invoke(home, *report, "--account", "buyer", "--json")
    assert reported.exit_code == 0, reported.stderr
    result = json.loads(reported.stdout)
    assert result["accepted_by"] == members and result["refused_by"] == {}
    assert set(result["scores"]) == set(providers.values())

    # The totals are the plaintext influence of each provider's rows.
    read = [valuation_cmds.read_table(p, features, "digit", 10) for p in (train, evaluation)]
    plain, _ = valuation_cmds.publish_valuation(
        *read, classes=10, k=256, seed=11, backend=PlainBackend()
    )
    assert plain.terms.params_sha256 == summary["valuation"]["tip"]["params_sha256"]
    for provider in data.providers:
        x = provider.x * data.scale + data.mean
        expected = plain.buyer.decrypt_scores(
            score_rows(plain.terms, plain.model, plain.context, plain.query, x, provider.y)
        ).sum()
        dataset = providers[provider.name]
        assert result["rows"][dataset] == provider.size
        assert result["scores"][dataset] == pytest.approx(expected, rel=1e-5, abs=1e-3)
    scores = result["scores"]
    assert min(scores, key=scores.__getitem__) == providers["flipped"]

    # Every member took the report: the committee settles on it at once, not at the latest
    # time the report states (the window's end plus the members' peer timeout, 3 s here).
    assert result["settles_by"] == due + 3.0
    waited = _invoke(home, *wait, "--json")
    assert waited.exit_code == 0, waited.stderr
    assert json.loads(waited.stdout)["state"] == "FINALIZED"  # stdout: the JSON alone
    assert waited.stderr.splitlines()[-1] == (
        f"job {job_id} finalized: `market bounty result {job_id}` shows the result"
    )
    assert committee.clock() < due  # the nodes' own clock: well inside the report window
    late = _invoke(home, *report, "--account", "buyer")
    assert late.exit_code == 1 and "already finalized; a report is too late" in late.stderr
    raw_doc = requests.get(f"{endpoint}/jobs/{job_id}/result", timeout=10).content
    document = ResultDocument.from_bytes(raw_doc, sandbox.escrow.job(job_id).result_hash)
    valuation = document.result["valuation"]
    assert valuation["rule"] == "influence"
    assert valuation["report"]["report"] == result["report"]
    assert providers["flipped"] in valuation["slashes"]
    sandbox.assert_accounting()


def test_wait_progress_says_each_stage_once_and_a_lasting_one_once_a_minute() -> None:
    said: list[str] = []
    now = [0.0]
    progress = Progress(said.append, every=60.0, clock=lambda: now[0])
    looks = [(0, "posted"), (2, "posted"), (30, "posted"), (61, "posted"), (62, "closed"),
             (64, "closed"), (200, "closed"), (201, "finalized")]  # fmt: skip
    for t, line in looks:
        now[0] = t
        progress.update(line)
    assert said == ["posted", "still: posted", "closed", "still: closed", "finalized"]
