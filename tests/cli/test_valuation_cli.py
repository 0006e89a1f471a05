"""The buyer's valuation commands: `market valuation publish` (train on the buyer's own tables,
publish the model, the public CKKS context and Enc(q) by content address, share q for the
committee with the proposal committing to each share, keep the secret context and the shares
in private files, print the proposal's terms), `market valuation query` (post the shares to the
committee, sealed to each member) and `market valuation scores` (the buyer's own decrypted
view), the latter two against real heavy and light nodes over HTTP on an in-process chain,
with `market bounty post / wait / result` around them."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from compute import products
from compute.kinds import ValuationSpec
from compute.policy import Policy
from compute.proposal import BlobRef, parse_proposal
from compute.randomness import AesCtrRandom
from compute.sharing import ShamirScheme
from market.chain import TOKEN, Chain
from market.cli import valuation_cmds
from market.cli.main import main
from market.cli.progress import Progress
from market.escrow.documents import fetch
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
        "--committee-size", "5", "--proposal", str(proposal_file),
    )  # fmt: skip

    # The terms are what a proposal's "valuation" holds.
    spec = ValuationSpec.model_validate(summary["valuation"])
    terms = TipTerms.from_json(spec.tip)
    assert (terms.k, terms.projection_seed, terms.backend) == (64, 9, "tenseal-ckks")
    assert terms.model == {"kind": "softmax", "n_features": 3, "n_classes": 3}
    assert spec.features == FEATURES and spec.label == "y"
    assert summary["classes"] == 3 and summary["rows"] == {"train": 60, "eval": 30}
    assert (summary["committee_size"], summary["threshold"]) == (5, 3)

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

    # The query shares: mode 0600 beside the secret, one per member of the committee of 5, each
    # the one the terms commit to; 3 of them give the encoded q (the same q as in plaintext).
    shares_path = Path(summary["query_shares"])
    assert shares_path == cli.home / "valuation" / f"{spec.context.sha256}.query"
    assert stat.S_IMODE(shares_path.stat().st_mode) == 0o600
    shared = valuation_cmds.load_query(shares_path)
    assert shared.commitments() == spec.committee.commitments and len(shared.nonces) == 5
    encoded = products.encode_query(plain.q, spec.committee.q_bits)
    opened = ShamirScheme(5, 3).reconstruct({i: shared.shares[i - 1] for i in (1, 3, 5)})
    np.testing.assert_array_equal(opened, encoded)

    # The whole proposal it wrote is valid once `bounty post` fills in money, time, committee.
    template = json.loads(proposal_file.read_text())
    assert template["valuation"] == summary["valuation"]
    assert template["committee_size"] == 5 and template["reduce"]["threshold"] == 3
    proposal = parse_proposal(
        {**template, "economics": {**template["economics"], "budget": 10**18},
         "deadline": 2_000_000_000, "quorum": 3}
    )  # fmt: skip
    assert proposal.kind == "valuation" and proposal.valuation == spec
    assert (proposal.committee_size, proposal.threshold) == (5, 3)

    # An existing secret file is never overwritten (nor an existing proposal file).
    again = ("valuation", "publish", "--train", str(train), "--eval", str(evaluation),
             "--features", ",".join(FEATURES), "--label", "y", "--k", "64")  # fmt: skip
    line = cli.fails(1, *again, "--out", str(secret))
    assert "already exists" in line and "never overwritten" in line
    assert load_buyer(secret.read_bytes()).public_context() == buyer.public_context()
    assert "already exists" in cli.fails(1, *again, "--proposal", str(proposal_file))
    assert "--committee-size must be odd" in cli.fails(2, *again, "--committee-size", "4")
    # --out DIR: the secret goes in that directory, by the same naming.
    keep = tmp_path / "keys"
    keep.mkdir()
    moved: Any = cli.json(*again, "--out", str(keep))
    assert Path(moved["secret"]).parent == keep == Path(moved["query_shares"]).parent
    for saved in (moved["secret"], moved["query_shares"]):
        assert stat.S_IMODE(Path(saved).stat().st_mode) == 0o600


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
MAX_EXAMPLES = 2_000
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
def test_a_buyer_publishes_posts_queries_and_reads_the_committees_totals_with_the_cli(
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
        "--seed", "11", "--max-examples", str(MAX_EXAMPLES), "--proposal", str(proposal_file),
        "--max-slash-bps", str(MAX_SLASH_BPS), "--json",
    )  # fmt: skip
    assert published.exit_code == 0, published.stderr
    summary = json.loads(published.stdout)
    post = ("bounty", "post", str(proposal_file), "--budget", str(BUDGET_DATA),
            "--deadline", "1h", "--fee-bps", "500", "--account", "buyer")  # fmt: skip
    # The query is shared for a committee of 3: another size is refused before any transaction.
    resized = _invoke(home, *post, "--committee-size", "5")
    assert resized.exit_code == 1 and resized.stderr.count("\n") == 1, resized.stderr
    assert "3 share commitments for a committee of 5" in resized.stderr
    assert sandbox.escrow.jobs() == []
    posted = _invoke(home, *post, "--json")
    assert posted.exit_code == 0, posted.stderr
    job = json.loads(posted.stdout)
    job_id, members = job["job"], job["committee"]
    assert f"`market valuation query {job_id}`) with --account buyer" in posted.stderr  # hint
    sandbox.wait_ready(job_id)  # the drawn members accept before anything is sent

    query = ("valuation", "query", str(job_id))
    # Shares the proposal does not commit to (another sharing of a query for 3 members) are
    # refused in one line, and nothing reaches the committee; so is any account but the buyer.
    other = tmp_path / "other.query"
    shared = products.share_query(np.ones(256, np.int64), 3, 2, AesCtrRandom.from_seed(1))
    other.write_bytes(valuation_cmds.query_bytes(shared, summary["valuation"]["committee"], "0"))
    wrong = _invoke(home, *query, "--account", "buyer", "--shares", str(other))
    assert wrong.exit_code == 1 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert f"holds query shares that job {job_id}'s proposal does not commit to" in wrong.stderr
    assert "--shares FILE" in wrong.stderr
    stranger_query = _invoke(home, *query, "--account", "stranger")
    assert stranger_query.exit_code == 1
    assert "only the job's buyer posts its query" in stranger_query.stderr
    for node in committee.nodes.values():
        assert node.store.late_inputs(job_id) == {}
        assert node.status(job_id)["waiting_for"] == "query"
    # The buyer's own shares (found in $MARKET_HOME/valuation by the job's context): every
    # member takes its share, and the round no longer waits for it.
    sent = _invoke(home, *query, "--account", "buyer", "--json")
    assert sent.exit_code == 0, sent.stderr
    took = json.loads(sent.stdout)
    assert took == {"job": job_id, "members": members, "failed": {}, "tx_hashes": []}
    # Run again, it sends the very same sealed input (kept beside the shares): a different one
    # would leave the committee unable to agree.
    again = _invoke(home, *query, "--account", "buyer", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["failed"] == {}, again.stderr
    for node in committee.nodes.values():
        assert len(node.store.late_inputs(job_id)) == 1

    # Five providers of different quality share their summed gradients and send their rows'
    # scores under the buyer's key.
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

    # Before the round: no scores yet, exit code 5, one line.
    scores = ("valuation", "scores", str(job_id))
    early = _invoke(home, *scores)
    assert early.exit_code == valuation_cmds.EXIT_NOT_YET == 5, early.stderr
    assert early.stderr.count("\n") == 1 and f"job {job_id} has no scores yet" in early.stderr

    # Past the deadline the committee opens the totals and settles at once (no report, no
    # decrypt window): `bounty wait` follows it to the end.
    wait = ("bounty", "wait", str(job_id), "--poll", "0.1")
    deadline = sandbox.escrow.job(job_id).deadline
    committee.clock.advance(deadline - committee.clock() + 1)
    waited = _invoke(home, *wait, "--json")
    assert waited.exit_code == 0, waited.stderr
    assert json.loads(waited.stdout)["state"] == "FINALIZED"  # stdout: the JSON alone
    assert waited.stderr.splitlines()[-1] == (
        f"job {job_id} finalized: `market bounty result {job_id}` shows the result"
    )
    assert committee.clock() < deadline + 60  # the nodes' own clock: settled at once
    late = _invoke(home, *query, "--account", "buyer")
    assert late.exit_code == 1 and "already finalized; its query is too late" in late.stderr

    # The committee's totals are each provider's plaintext influence q . G_p.
    result = _invoke(home, "bounty", "result", str(job_id), "--json")
    assert result.exit_code == 0, result.stderr
    valuation = json.loads(result.stdout)["result"]["valuation"]
    assert valuation["rule"] == "influence" and valuation["void"] == []
    assert set(valuation["totals"]) == set(providers.values())
    totals = valuation["scores"]
    read = [valuation_cmds.read_table(p, features, "digit", 10) for p in (train, evaluation)]
    plain, _ = valuation_cmds.publish_valuation(
        *read, classes=10, k=256, seed=11, backend=PlainBackend()
    )
    assert plain.terms.params_sha256 == summary["valuation"]["tip"]["params_sha256"]
    expected = {}
    for provider in data.providers:
        x = provider.x * data.scale + data.mean
        expected[providers[provider.name]] = plain.buyer.decrypt_scores(
            score_rows(plain.terms, plain.model, plain.context, plain.query, x, provider.y)
        ).sum()
        dataset = providers[provider.name]
        assert totals[dataset] == pytest.approx(expected[dataset], rel=1e-3, abs=1e-2)
    assert min(totals, key=totals.__getitem__) == providers["flipped"]
    assert providers["flipped"] in valuation["slashes"]
    # `bounty result` shows them: each dataset's total influence, payout and slash.
    shown = _invoke(home, "bounty", "result", str(job_id))
    assert shown.exit_code == 0, shown.stderr
    assert "total influence q . G_p, computed by the committee" in shown.stdout
    flipped = next(line for line in shown.stdout.splitlines() if providers["flipped"] in line)
    assert f"influence {totals[providers['flipped']]:.6g}" in flipped and "slashed" in flipped

    # The buyer's own view: per-row scores decrypted here, which add up to the totals.
    view = _invoke(home, *scores, "--json")
    assert view.exit_code == 0, view.stderr
    per_dataset = json.loads(view.stdout)["scores"]
    for provider in data.providers:
        dataset = providers[provider.name]
        assert per_dataset[dataset]["rows"] == provider.size
        assert per_dataset[dataset]["total"] == pytest.approx(expected[dataset], rel=1e-5, abs=1e-3)
        assert per_dataset[dataset]["min"] <= per_dataset[dataset]["mean"]
        assert per_dataset[dataset]["mean"] <= per_dataset[dataset]["max"]
    report = _invoke(home, "valuation", "report", str(job_id), "--json")
    assert report.exit_code == 0 and json.loads(report.stdout) == json.loads(view.stdout)
    table_view = _invoke(home, *scores)
    assert table_view.exit_code == 0, table_view.stderr
    assert "these inform you only: the payouts follow the totals the committee computed" in (
        table_view.stdout
    )
    # A secret that is not the job's is refused.
    foreign = tmp_path / "other.secret"
    foreign.write_bytes(PlainBackend().create_buyer(64).to_bytes(secret=True))
    mismatched = _invoke(home, *scores, "--secret", str(foreign))
    assert mismatched.exit_code == 1 and "is not the secret of job" in mismatched.stderr
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
