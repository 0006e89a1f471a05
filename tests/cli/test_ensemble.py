"""Ensembles through the real `market` entry point: model files registered as datasets, the
buyer's evaluation set published and put into a proposal template, a model holder's light node
scoring it, and the result of an ensemble job as `bounty result` shows it."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from compute.kinds import EnsembleSpec
from compute.proposal import parse_proposal
from market.chain import TOKEN
from market.home import Home
from market.storage import fetch_uri, open_storage
from nodes.evalset import EvaluationSet
from tests.cli.conftest import (
    MARKET,
    Cli,
    accept_as_committee,
    free_port,
    heavy_node_processes,
    settle_as_committee,
    wait_for_state,
)

CLASSES = 3


def _data(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 4 features and a label 0..2 that depends on them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.5)
    return x, y


def _models(tmp: Path) -> dict[str, Path]:
    """Fitted classifiers saved as a model holder would: joblib and plain pickle."""
    x, y = _data(1, 120)
    paths = {"logistic": tmp / "logistic.joblib", "tree": tmp / "tree.pkl"}
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), paths["logistic"])
    with paths["tree"].open("wb") as f:
        pickle.dump(DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y), f)
    return paths


def _evaluation(tmp: Path, **extra: np.ndarray) -> Path:
    x, y = _data(2, 30)
    path = tmp / "evaluation.npz"
    np.savez(path, x_val=x[:20], y_val=y[:20], x_test=x[20:], **extra)
    return path


def test_models_register_as_datasets_of_kind_model(embedded_cli: Cli, tmp_path: Path):
    cli = embedded_cli
    paths = _models(tmp_path)
    logistic = cli.json("dataset", "register", str(paths["logistic"]), "--name", "logistic")
    assert logistic["kind"] == "model"
    assert logistic["model"] == {
        "estimator": "LogisticRegression",
        "classes": [0, 1, 2],
        "n_features": 4,
    }
    assert logistic["path"] == str(paths["logistic"].resolve())
    assert "rows" not in logistic and "mock" not in logistic and "schema" not in logistic
    assert logistic["sha256"] == hashlib.sha256(paths["logistic"].read_bytes()).hexdigest()
    # The same file and name again: the same dataset.
    again = cli.json("dataset", "register", str(paths["logistic"]), "--name", "logistic")
    assert again["dataset"] == logistic["dataset"]

    shown = cli.ok("dataset", "register", str(paths["tree"]))  # a plain pickle, named "tree"
    assert "registered model tree" in shown and "DecisionTreeClassifier" in shown
    assert "no mock data" in shown

    table = tmp_path / "clinic.csv"
    table.write_text("age,bp\n34,120\n51,135\n")
    assert cli.json("dataset", "register", str(table), "--name", "clinic")["kind"] == "table"

    listed = {d["name"]: d for d in cli.json("dataset", "list", net=True)}
    assert {n: (d["kind"], d["rows"]) for n, d in listed.items()} == {
        "logistic": ("model", None),
        "tree": ("model", None),
        "clinic": ("table", 2),
    }
    text = cli.ok("dataset", "list", net=True)
    assert "kind" in text and "model" in text and "table" in text

    line = cli.fails(1, "dataset", "mock", "logistic")
    assert "logistic is a model" in line and "models have no mock data" in line
    assert cli.ok("dataset", "mock", "clinic").startswith("age,bp")

    help_text = " ".join(cli.ok("dataset", "register", "--help").split())
    assert ".joblib" in help_text and "unpickling runs code" in help_text


def test_files_that_are_not_usable_models_are_refused(embedded_cli: Cli, tmp_path: Path):
    cli = embedded_cli
    x, y = _data(1, 40)
    scaler, unfitted, named, junk = (
        tmp_path / n for n in ("scaler.joblib", "unfitted.joblib", "named.joblib", "junk.pkl")
    )
    joblib.dump(StandardScaler().fit(x), scaler)
    joblib.dump(GaussianNB(), unfitted)
    joblib.dump(GaussianNB().fit(x, np.array(["low", "mid", "high"])[y]), named)
    junk.write_bytes(b"not a model at all")

    line = cli.fails(1, "dataset", "register", str(scaler))
    assert "StandardScaler" in line and "predict_proba" in line
    line = cli.fails(1, "dataset", "register", str(unfitted))
    assert "without classes_" in line and "fit it" in line
    line = cli.fails(1, "dataset", "register", str(named))
    assert "integer labels" in line and "'high'" in line
    line = cli.fails(1, "dataset", "register", str(junk))
    assert "cannot load the model" in line and "joblib" in line
    # Nothing was registered.
    assert list((cli.home / "datasets").iterdir()) == []


def test_a_buyer_publishes_an_evaluation_set_and_templates_an_ensemble(
    embedded_cli: Cli, tmp_path: Path
):
    cli = embedded_cli
    x_test_labels = _data(2, 30)[1][20:]
    path = _evaluation(tmp_path, y_test=x_test_labels)  # the test labels stay with the buyer
    proc = cli.run("bounty", "evaluation", str(path), "--classes", str(CLASSES), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "left out (not published): y_test" in proc.stderr
    terms = json.loads(proc.stdout)
    spec = EnsembleSpec.model_validate(terms)
    assert (spec.features, spec.classes, spec.validation_rows, spec.test_rows) == (4, 3, 20, 10)
    assert spec.evaluation.uri.startswith("ipfs://")
    # What the nodes will fetch: the three public arrays, byte for byte what the terms name.
    raw = fetch_uri(spec.evaluation.uri, open_storage(Home(cli.home)))
    published = EvaluationSet.from_bytes(raw, spec)
    x, y = _data(2, 30)
    assert np.array_equal(published.x_val, x[:20]) and np.array_equal(published.y_val, y[:20])
    with np.load(io.BytesIO(raw)) as npz:
        assert sorted(npz.files) == ["x_test", "x_val", "y_val"]

    # Without --json: a sentence, then the same terms to paste.
    shown = cli.ok("bounty", "evaluation", str(path), "--classes", str(CLASSES))
    assert "20 validation rows, 10 test rows, 4 features, 3 classes" in shown
    assert json.loads(shown[shown.index("{") :]) == terms

    # The template takes the terms (a file, or stdin) and gives a proposal `bounty post` takes.
    terms_file = tmp_path / "terms.json"
    terms_file.write_text(json.dumps(terms))
    template = json.loads(
        cli.ok(
            "bounty",
            "template",
            "--kind",
            "ensemble",
            "--ensemble",
            str(terms_file),
            "--min-participants",
            "2",
        )
    )
    assert template["kind"] == "ensemble" and template["ensemble"] == terms
    assert template["map"]["function"] == "model_probabilities"
    assert template["reduce"]["op"] == "weighted_sum"
    assert template["economics"]["payout_rule"] == "ensemble_weight"
    proposal = parse_proposal(
        {
            **template,
            "economics": {**template["economics"], "budget": 10 * TOKEN},
            "deadline": 2_000_000_000,
            "committee_size": 3,
            "quorum": 2,
        }
    )
    assert proposal.ensemble == spec and proposal.privacy.min_participants == 2
    piped = subprocess.run(
        [MARKET, "bounty", "template", "--kind", "ensemble", "--ensemble", "-"],
        input=json.dumps(terms),
        capture_output=True,
        text=True,
        env=cli.env(),
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["ensemble"] == terms

    line = cli.fails(1, "bounty", "template", "--kind", "ensemble")
    assert "--ensemble" in line and "market bounty evaluation" in line
    line = cli.fails(
        1,
        "bounty",
        "template",
        "--kind",
        "ensemble",
        "--ensemble",
        str(terms_file),
        "--column",
        "bp",
    )
    assert "--column" in line and "aggregate" in line
    line = cli.fails(1, "bounty", "template", "--ensemble", str(terms_file))
    assert "--kind ensemble" in line
    terms_file.write_text(json.dumps({**terms, "classes": 1}))
    line = cli.fails(1, "bounty", "template", "--kind", "ensemble", "--ensemble", str(terms_file))
    assert "classes" in line
    # The default template is still an aggregate.
    assert json.loads(cli.ok("bounty", "template"))["kind"] == "aggregate"

    # An ensemble proposal has no mock run.
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(template))
    models = _models(tmp_path)
    cli.ok("dataset", "register", str(models["logistic"]), "--name", "logistic")
    line = cli.fails(1, "bounty", "try", str(spec_file), "--mock", "logistic")
    assert "ensemble" in line and "mock" in line


def test_bad_evaluation_files_say_what_is_wrong(embedded_cli: Cli, tmp_path: Path):
    cli = embedded_cli
    x, y = _data(2, 30)

    def fails(name: str, classes: int = CLASSES) -> str:
        return cli.fails(1, "bounty", "evaluation", str(tmp_path / name), "--classes", str(classes))

    np.savez(tmp_path / "no_labels.npz", x_val=x[:20], x_test=x[20:])
    assert "lacks y_val" in fails("no_labels.npz")
    np.save(tmp_path / "single.npy", x)
    assert "single array, not an .npz" in fails("single.npy")
    (tmp_path / "text.npz").write_text("x_val,y_val\n1,2\n")
    assert "not an .npz" in fails("text.npz")
    np.savez(tmp_path / "widths.npz", x_val=x[:20], y_val=y[:20], x_test=x[20:, :3])
    assert "same features" in fails("widths.npz")
    np.savez(tmp_path / "labels.npz", x_val=x[:20], y_val=y[:20], x_test=x[20:])
    assert "integer labels 0 .. 1" in fails("labels.npz", classes=2)
    np.savez(tmp_path / "count.npz", x_val=x[:20], y_val=y[:19], x_test=x[20:])
    assert "one label per validation row" in fails("count.npz")
    objects = np.empty(20, dtype=object)
    np.savez(tmp_path / "objects.npz", x_val=x[:20], y_val=objects, x_test=x[20:])
    assert "object (pickled) arrays" in fails("objects.npz")
    # Nothing was published.
    storage = cli.home / "storage"
    assert not storage.exists() or not any(p.is_file() for p in storage.rglob("*"))


@pytest.mark.slow
def test_a_model_holder_serves_an_ensemble_job_and_the_buyer_reads_its_result(
    embedded_cli: Cli, tmp_path: Path
):
    cli = embedded_cli
    for who in ("buyer", "holder", "node0", "node1", "node2"):
        cli.ok("wallet", "new", who)
        cli.ok("faucet", "--account", who, "--amount", "2000", net=True)
    for i in range(3):  # registered and accepting, not running: the shares find no one
        cli.ok(
            "heavy",
            "register",
            "--endpoint",
            f"http://127.0.0.1:{free_port()}",
            "--stake",
            "1000",
            "--account",
            f"node{i}",
            net=True,
        )
    models = _models(tmp_path)
    model = cli.json("dataset", "register", str(models["logistic"]), "--name", "logistic")
    table = tmp_path / "clinic.csv"
    table.write_text("age,bp\n34,120\n51,135\n47,128\n")
    clinic = cli.json("dataset", "register", str(table), "--name", "clinic")
    for name in ("logistic", "clinic"):
        cli.ok("dataset", "stake", name, "--amount", "50", "--account", "holder", net=True)
    # The default policy takes aggregates only: the node says its model would take part in none.
    proc = cli.run("node", "light", "--once", "--account", "holder", net=True)
    assert proc.returncode == 0, proc.stderr
    assert "does not allow ensemble jobs" in " ".join(proc.stderr.split())

    terms = tmp_path / "terms.json"
    terms.write_text(
        cli.ok(
            "bounty", "evaluation", str(_evaluation(tmp_path)), "--classes", str(CLASSES), "--json"
        )
    )
    spec = tmp_path / "spec.json"
    spec.write_text(
        cli.ok(
            "bounty",
            "template",
            "--kind",
            "ensemble",
            "--ensemble",
            str(terms),
            "--min-participants",
            "1",
        )
    )
    job = cli.json(
        "bounty",
        "post",
        str(spec),
        "--budget",
        "100",
        "--deadline",
        "2h",
        "--account",
        "buyer",
        net=True,
    )["job"]

    accept_as_committee(cli, job)

    # The light node loads the model, scores the public evaluation set (20 validation and 10
    # test rows) and shares the probabilities; the table cannot take part in an ensemble.
    policy = tmp_path / "ensembles.json"
    policy.write_text(
        json.dumps({"allowed_kinds": ["aggregate", "ensemble"], "min_participants": 1})
    )
    taken = {
        t["dataset"]: t
        for t in cli.json(
            "node", "light", "--once", "--account", "holder", "--policy", str(policy), net=True
        )
    }
    assert taken[model["dataset"]]["status"] == "submitted"
    assert taken[model["dataset"]]["reason"].startswith("probabilities on 30 rows")
    assert taken[clinic["dataset"]]["status"] == "refused"
    assert "take a model" in taken[clinic["dataset"]]["reason"]

    # The committee's result, as the heavy nodes write it for an ensemble.
    holder = cli.json("wallet", "list")
    holder_address = next(a["address"] for a in holder if a["alias"] == "holder")
    other = "0x" + "ab" * 32
    values = [1 / 3] * (10 * CLASSES)
    summary = {
        "op": "weighted_sum",
        "values": values,
        "count": 2,
        "participants": [model["dataset"], other],
        "privacy": None,
        "ensemble": {
            "classes": CLASSES,
            "test_rows": 10,
            "validation_accuracy": {model["dataset"]: 0.8125, other: 0.5},
            "weights": {model["dataset"]: 1.0, other: 0.0},
            "weight_scale": 2**16,
            "values": "the weighted ensemble's probabilities, test row by test row",
        },
    }
    settle_as_committee(cli, job, summary, {holder_address: 90 * TOKEN})

    shown = cli.ok("bounty", "result", str(job), net=True)
    assert "weighted ensemble of 2 models: 3 classes, 10 test rows" in shown
    assert model["dataset"] in shown and "1.0000" in shown and "0.8125" in shown
    assert other in shown and "0.0000" in shown and "0.5000" in shown
    assert "test accuracy" not in shown  # without the buyer's labels
    assert "30 ensemble probabilities" in shown
    assert "0.3333" not in shown  # the probabilities themselves only with --json
    assert len(shown.splitlines()) < 30
    result = cli.json("bounty", "result", str(job), net=True)
    assert result["result"]["values"] == values
    assert result["result"]["ensemble"]["weights"] == summary["ensemble"]["weights"]
    assert "accuracy" not in result

    # The buyer's own test labels, read locally: the released ensemble's test accuracy beside
    # the models' validation accuracy. Every released row is a tie (1/3 each): class 0 wins.
    y_test = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 0])
    npz, text = tmp_path / "labels.npz", tmp_path / "labels.csv"
    np.savez(npz, y_test=y_test)
    text.write_text("label\n" + "\n".join(str(v) for v in y_test) + "\n")
    for labels in (npz, text):
        scored = cli.json("bounty", "result", str(job), "--test-labels", str(labels), net=True)
        assert scored["accuracy"] == {
            "test_labels": 10,
            "ensemble_test": 0.5,
            "ensemble_validation": 0.8125,
            "best_model_validation": 0.8125,
            "models_validation": {model["dataset"]: 0.8125, other: 0.5},
        }
    shown = " ".join(cli.ok("bounty", "result", str(job), "--test-labels", str(npz), net=True)
                     .split())  # fmt: skip
    assert "ensemble test accuracy 0.5000 on your 10 labels" in shown
    assert "validation accuracy: ensemble 0.8125, best model 0.8125" in shown
    short = tmp_path / "short.txt"
    short.write_text("0\n1\n")
    line = cli.fails(1, "bounty", "result", str(job), "--test-labels", str(short), net=True)
    assert "has 2 labels; the job has 10 test rows" in line
    wide = tmp_path / "wide.csv"
    wide.write_text("0,1\n1,2\n")
    line = cli.fails(1, "bounty", "result", str(job), "--test-labels", str(wide), net=True)
    assert "more than one column" in line
    assert "finalized" in cli.ok("bounty", "wait", str(job), net=True)
    show = cli.json("bounty", "show", str(job), net=True)
    assert show["state"] == "FINALIZED" and show["result_hash"] != "0x" + "00" * 32


@pytest.mark.anvil
def test_an_ensemble_job_settles_through_the_nodes(devnet_cli: Cli, tmp_path: Path):
    """Three `market node heavy` processes, two model holders' `market node light`: the
    committee fits the weights, releases the ensemble, and pays by weight."""
    cli = devnet_cli
    holders = ("h0", "h1")
    for who in ("buyer", "node0", "node1", "node2", *holders):
        cli.ok("wallet", "new", who)
        cli.ok("faucet", "--account", who, "--amount", "2000", net=True)
    models = _models(tmp_path)
    with heavy_node_processes(cli):
        ids = {}
        for who, model in zip(holders, ("logistic", "tree"), strict=True):
            ids[who] = cli.json("dataset", "register", str(models[model]), "--name", who)["dataset"]
            cli.ok("dataset", "stake", who, "--amount", "20", "--account", who, net=True)
        terms = tmp_path / "terms.json"
        terms.write_text(
            cli.ok(
                "bounty",
                "evaluation",
                str(_evaluation(tmp_path)),
                "--classes",
                str(CLASSES),
                "--json",
            )
        )
        spec = tmp_path / "spec.json"
        spec.write_text(
            cli.ok(
                "bounty",
                "template",
                "--kind",
                "ensemble",
                "--ensemble",
                str(terms),
                "--min-participants",
                "2",
            )
        )
        job = cli.json(
            "bounty",
            "post",
            str(spec),
            "--budget",
            "300",
            "--deadline",
            "40s",
            "--account",
            "buyer",
            net=True,
        )["job"]
        policy = tmp_path / "ensembles.json"
        policy.write_text(json.dumps({"allowed_kinds": ["ensemble"], "min_participants": 2}))
        for who in holders:
            taken = cli.json(
                "node", "light", "--once", "--account", who, "--policy", str(policy), net=True
            )
            assert [t["status"] for t in taken] == ["submitted"], taken

        wait_for_state(cli, job, "FINALIZED", 180.0)
        result = cli.json("bounty", "result", str(job), net=True)["result"]
        ensemble = result["ensemble"]
        assert set(ensemble["weights"]) == set(ids.values())
        assert sum(ensemble["weights"].values()) == pytest.approx(1.0, abs=1e-3)
        # Two models: the best alone and (unless it would open a model's outputs) one blend;
        # the weights released are the chosen candidate's.
        candidates = ensemble["candidates"]
        assert candidates[0]["name"] == "best model" and 1 <= len(candidates) <= 2
        assert ensemble["weights"] == candidates[ensemble["chosen"]]["weights"]
        assert len(result["values"]) == 10 * CLASSES
        rows = np.array(result["values"]).reshape(10, CLASSES)
        assert np.allclose(rows.sum(axis=1), 1.0, atol=1e-2)
        shown = cli.ok("bounty", "result", str(job), net=True)
        assert "weighted ensemble of 2 models" in shown and "30 ensemble probabilities" in shown

        pool = 300 * TOKEN - 300 * TOKEN * 1_000 // 10_000
        claimed = {who: cli.json("claim", "--account", who, net=True)["claimed"] for who in holders}
        paid = {who: sum(c["amount"] for c in claimed[who]) for who in holders}
        assert pool - 2 <= sum(paid.values()) <= pool
        for who in holders:  # payouts follow the fitted weights
            assert paid[who] / pool == pytest.approx(ensemble["weights"][ids[who]], abs=1e-3)


@pytest.mark.slow
def test_an_ensemble_job_with_too_few_holders_says_why_it_aborted(
    embedded_cli: Cli, tmp_path: Path
):
    """The ensemble template asks for three holders by default; a job the committee aborts
    for too few participants says so in `bounty result` and `bounty show`."""
    from market.escrow.eip712 import sign_digest
    from tests.cli.conftest import _committee_nodes, _escrow

    cli = embedded_cli
    cli.ok("wallet", "new", "buyer")
    cli.ok("faucet", "--account", "buyer", "--amount", "2000", net=True)
    for i in range(3):  # registered, not running: no member answers for its status
        cli.ok("wallet", "new", f"node{i}")
        cli.ok("faucet", "--account", f"node{i}", "--amount", "2000", net=True)
        cli.ok("heavy", "register", "--endpoint", f"http://127.0.0.1:{free_port()}",
               "--stake", "1000", "--account", f"node{i}", net=True)  # fmt: skip
    terms = tmp_path / "terms.json"
    terms.write_text(
        cli.ok("bounty", "evaluation", str(_evaluation(tmp_path)), "--classes", "3", "--json")
    )
    spec = tmp_path / "spec.json"
    spec.write_text(cli.ok("bounty", "template", "--kind", "ensemble", "--ensemble", str(terms)))
    assert json.loads(spec.read_text())["privacy"]["min_participants"] == 3
    job = cli.json("bounty", "post", str(spec), "--budget", "100", "--deadline", "2h",
                   "--account", "buyer", net=True)["job"]  # fmt: skip
    accept_as_committee(cli, job)
    with _escrow(cli) as escrow:
        nodes = _committee_nodes(cli)
        digest = escrow.abort_digest(job, "too_few_participants")
        signatures = [sign_digest(n, digest) for n in nodes[:2]]
        escrow.abort(nodes[0], job, "too_few_participants", signatures)

    line = cli.fails(1, "bounty", "result", str(job), net=True)
    assert f"job {job} was aborted (too few participants:" in line
    assert "the proposal needs 3 (privacy.min_participants)" in line
    show = cli.json("bounty", "show", str(job), net=True)
    assert show["state"] == "ABORTED"
    assert show["abort"] == {
        "reason": "too_few_participants", "refund": 100 * TOKEN, "needed": 3, "submitted": None
    }  # fmt: skip
    assert "too few participants" in " ".join(cli.ok("bounty", "show", str(job), net=True).split())


def test_the_buyer_s_accuracy_names_a_chosen_blend_s_validation_accuracy():
    """`bounty result --test-labels` beside a blend: the ensemble's validation accuracy is the
    chosen candidate's, not any one model's."""
    from market.cli.bounty import _ensemble_accuracy

    result = {
        "values": [0.6, 0.4, 0.2, 0.8],
        "ensemble": {
            "classes": 2,
            "test_rows": 2,
            "validation_accuracy": {"0xaa": 0.75, "0xbb": 0.7},
            "weights": {"0xaa": 0.6, "0xbb": 0.4},
            "candidates": [
                {
                    "name": "best model",
                    "weights": {"0xaa": 1.0, "0xbb": 0.0},
                    "validation_accuracy": 0.75,
                },
                {
                    "name": "(accuracy - chance)^16",
                    "weights": {"0xaa": 0.6, "0xbb": 0.4},
                    "validation_accuracy": 0.8,
                },
            ],  # fmt: skip
            "chosen": 1,
        },
    }
    accuracy = _ensemble_accuracy(result, np.array([0, 0]))
    assert accuracy["ensemble_test"] == 0.5
    assert accuracy["ensemble_validation"] == 0.8 and accuracy["best_model_validation"] == 0.75
