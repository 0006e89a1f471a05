"""The buyer's side of a valuation (TIP) job on the command line: `market valuation publish`
trains the buyer's model on its own tables, publishes the model, the public CKKS context and
`Enc(q)` to content-addressed storage, keeps the secret context in a private file and prints the
proposal's `valuation` terms; `market valuation report` decrypts the participants' scores after
the deadline and reports the totals to the job's committee, signed by the buyer's account."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from market.cli.common import (
    Signer,
    UserError,
    account_options,
    emit_json,
    err,
    existing_job,
    format_time,
    json_option,
    network_options,
    out,
    step,
    table,
)
from market.home import Home

Net = Callable[[], Any]

DEFAULT_DECRYPT_WINDOW = 3_600
"""Seconds after the deadline for the buyer's report (at most half the settlement grace)."""
SECRET_SUFFIX = ".secret"


def secret_dir(home: Home | None = None) -> Path:
    """`$MARKET_HOME/valuation` (mode 0700): where the buyers' secret contexts are kept."""
    return (home or Home.default()).dir("valuation")


def default_secret_path(context_sha256: str, home: Home | None = None) -> Path:
    """Where `publish` keeps the secret context of the public context with this SHA-256."""
    return secret_dir(home) / f"{context_sha256}{SECRET_SUFFIX}"


# ------------------------------------------------------------------------------ tables
def _names(text: str, what: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise UserError(f"{what} must be comma-separated column names, like a,b,c; got {text!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{what} names a column twice: {', '.join(repeated)}")
    return names


def _read_csv(path: Path) -> Any:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise UserError(
            f"{path} is empty; it needs a header row and at least one data row"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a readable CSV table ({first})") from None
    if frame.empty:
        raise UserError(f"{path} has a header but no rows")
    return frame


def _numeric(frame: Any, path: Path, features: Sequence[str]) -> Any:
    import numpy as np
    import pandas as pd

    columns = []
    for name in features:
        raw = frame[name].str.strip()
        values = pd.to_numeric(raw, errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() | ~np.isfinite(values.to_numpy(float)))
        if len(bad):
            where = int(bad[0])
            shown = raw.iloc[where]
            problem = "is empty" if shown == "" else f"holds {shown!r}, not a finite number"
            raise UserError(
                f"{path}: feature {name!r} must be numeric; data row {where + 1} "
                f"{problem} ({len(bad)} such row{'s' if len(bad) > 1 else ''})"
            )
        columns.append(values.to_numpy(dtype=np.float64))
    return np.column_stack(columns)


def _labels(frame: Any, path: Path, label: str, classes: int | None) -> Any:
    import numpy as np

    raw = frame[label].str.strip()
    out_labels = np.empty(len(raw), dtype=np.int64)
    for i, text in enumerate(raw):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0 and value == int(value)):
            shown = "is empty" if text == "" else f"holds {text!r}"
            limit = f"0 to {classes - 1}" if classes else "0, 1, 2, ..."
            raise UserError(
                f"{path}: label {label!r} must hold integer class labels {limit}; data row "
                f"{i + 1} {shown}"
            )
        out_labels[i] = int(value)
        if classes is not None and out_labels[i] >= classes:
            raise UserError(
                f"{path}: label {label!r} has class {out_labels[i]} in data row {i + 1}, but "
                f"--classes is {classes} (labels 0 to {classes - 1})"
            )
    return out_labels


def read_table(
    path: Path, features: Sequence[str], label: str, classes: int | None
) -> tuple[Any, Any]:
    """The features (float64, the given order) and integer labels of the CSV at `path`;
    `UserError` saying what is wrong otherwise."""
    frame = _read_csv(path)
    missing = [c for c in (*features, label) if c not in frame.columns]
    if missing:
        held = ", ".join(str(c) for c in frame.columns)
        raise UserError(
            f"{path} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(it has {held})"
        )
    return _numeric(frame, path, features), _labels(frame, path, label, classes)


# ------------------------------------------------------------------------------ secrets
def _refuse_existing(path: Path) -> None:
    raise UserError(
        f"{path} already exists; it may hold the only key to a posted job's scores, so it is "
        "never overwritten: choose another --out"
    )


def write_secret(path: Path, raw: bytes) -> None:
    """Create `path` with mode 0600 and write `raw`; refuse an existing file (never replace a
    key that may be the only way to read a posted job's scores)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _refuse_existing(path)
    except OSError as exc:
        raise UserError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def load_secret(path: Path) -> Any:
    """The buyer context saved in `path` (`UserError` if it is not one)."""
    from market.valuation.tip.errors import TipError
    from market.valuation.tip.he import load_buyer

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the secret context {path}: {exc.strerror}") from None
    try:
        return load_buyer(raw)
    except TipError as exc:
        raise UserError(
            f"{path} is not a buyer's secret context saved by `market valuation publish` ({exc})"
        ) from None


def _secret_target(out_path: Path | None, context_sha256: str) -> Path:
    if out_path is None:
        return default_secret_path(context_sha256)
    if out_path.is_dir():
        return out_path / f"{context_sha256}{SECRET_SUFFIX}"
    return out_path


# ------------------------------------------------------------------------------ publish
def publish_valuation(
    train_xy: tuple[Any, Any],
    eval_xy: tuple[Any, Any],
    *,
    classes: int,
    k: int,
    seed: int,
    backend: Any,
) -> tuple[Any, dict[str, float]]:
    """Standardize with the training statistics, train a softmax regression, and build the
    publication (`tip.release.publish`); also the model's accuracies."""
    import numpy as np

    from market.valuation.tip.influence import SoftmaxRegression, TrainConfig, accuracy, train
    from market.valuation.tip.release import publish

    x_train, y_train = train_xy
    x_eval, y_eval = eval_xy
    std = x_train.std(axis=0)
    mean = x_train.mean(axis=0)
    scale = np.where(std > 0, std, 1.0)
    train_std = ((x_train - mean) / scale, y_train)
    eval_std = ((x_eval - mean) / scale, y_eval)
    model = SoftmaxRegression(x_train.shape[1], classes)
    config = TrainConfig()
    theta = train(model, *train_std, config)
    publication = publish(
        model, theta, config, train_std, eval_std, mean, scale,
        k=k, projection_seed=seed, backend=backend,
    )  # fmt: skip
    return publication, {
        "train_accuracy": accuracy(model, theta, *train_std),
        "eval_accuracy": accuracy(model, theta, *eval_std),
    }


def proposal_template(
    terms: dict[str, Any], title: str, min_participants: int, max_slash_bps: int
) -> dict[str, Any]:
    """A valuation proposal around `terms`, without what `market bounty post` fills in (budget,
    deadline, committee, quorum): the valuation kind's template."""
    from compute.kinds.valuation import VALUATION

    return VALUATION.proposal_template(
        min_participants=min_participants, title=title, valuation=terms,
        max_slash_bps=max_slash_bps,
    )  # fmt: skip


@click.command("publish")
@click.option(
    "--train",
    "train_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The buyer's training table (CSV): the model is trained on it.",
)
@click.option(
    "--eval",
    "eval_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The buyer's evaluation table (CSV): influence is measured on its loss.",
)
@click.option("--features", required=True, help="Feature columns in the model's order: a,b,c.")
@click.option("--label", required=True, help="The column of integer class labels 0..N-1.")
@click.option(
    "--classes",
    type=click.IntRange(2, 4096),
    default=None,
    help="Number of classes (default: the largest label seen + 1).",
)
@click.option(
    "--k",
    "k",
    default=256,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Projection size: the dimension of the projected gradients.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**63 - 1),
    default=None,
    help="Projection seed (default: a random one; it is stated in the terms).",
)
@click.option(
    "--decrypt-window",
    default=DEFAULT_DECRYPT_WINDOW,
    show_default=True,
    type=click.IntRange(1),
    help="Seconds after the deadline to report the scores.",
)
@click.option(
    "--max-examples",
    default=100_000,
    show_default=True,
    type=click.IntRange(1, 2**24),
    help="Most rows one provider may score.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to save the secret context: a new file, or an existing directory "
    "(default: $MARKET_HOME/valuation/<context sha256>.secret).",
)
@click.option(
    "--proposal",
    "proposal_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a whole valuation proposal with these terms to this file, for "
    "`market bounty post FILE --budget ... --deadline ...` (refused if it exists).",
)
@click.option("--min-participants", default=3, show_default=True, type=click.IntRange(1))
@click.option("--max-slash-bps", default=0, show_default=True, type=click.IntRange(0, 10_000),
              help="The proposal's cap on slashing harmful providers (--proposal).")  # fmt: skip
@click.option("--title", default="How much does your data help my model?", show_default=True)
@json_option
def publish_cmd(
    train_path: Path,
    eval_path: Path,
    features: str,
    label: str,
    classes: int | None,
    k: int,
    seed: int | None,
    decrypt_window: int,
    max_examples: int,
    out_path: Path | None,
    proposal_path: Path | None,
    min_participants: int,
    max_slash_bps: int,
    title: str,
    as_json: bool,
) -> None:
    """Train your model on your own tables and publish what a valuation job needs.

    TRAIN and EVAL are CSV tables with the --features columns (numeric) and the --label column
    (integer classes 0..N-1); they stay here. The features are standardized with TRAIN's mean
    and standard deviation, a softmax regression is trained on TRAIN, and the query q (the
    projected influence direction of EVAL's loss) is encrypted under a fresh CKKS key. The
    model, the public CKKS context and Enc(q) go to content-addressed storage (an IPFS node when
    $MARKET_IPFS_API is set, else $MARKET_HOME/storage); the secret context is saved, mode
    0600, to --out or $MARKET_HOME/valuation/<sha256>.secret: keep it, it is the only way to
    read the scores (`market valuation report`). Prints the proposal's "valuation" terms."""
    import secrets

    from pydantic import ValidationError

    from compute.kinds import ValuationSpec
    from compute.problems import describe
    from market.storage import open_storage
    from market.storage.errors import StorageError
    from market.valuation.tip.errors import TipError
    from market.valuation.tip.he import TenSealCKKS
    from nodes.valuation import publish_blobs

    feature_names = _names(features, "--features")
    label = label.strip()
    if not label:
        raise UserError("--label must name the label column")
    if label in feature_names:
        raise UserError(f"--label {label!r} is also in --features; the label is its own column")
    if out_path is not None and not out_path.is_dir() and out_path.exists():
        _refuse_existing(out_path)  # before any work
    if proposal_path is not None and proposal_path.exists():
        raise UserError(f"{proposal_path} already exists; choose another --proposal")
    x_train, y_train = read_table(train_path, feature_names, label, classes)
    x_eval, y_eval = read_table(eval_path, feature_names, label, classes)
    if len(x_train) < 2:
        raise UserError(f"{train_path} has {len(x_train)} row; training needs at least 2")
    n_classes = classes or int(max(y_train.max(), y_eval.max())) + 1
    if n_classes < 2:
        raise UserError(
            "the labels hold one class only (0); a classifier needs at least 2 (labels 0 and "
            "1), or say --classes"
        )
    seed = secrets.randbelow(2**31) if seed is None else seed
    backend = TenSealCKKS()
    try:
        with step("training the model and encrypting the query"):
            publication, stats = publish_valuation(
                (x_train, y_train), (x_eval, y_eval),
                classes=n_classes, k=k, seed=seed, backend=backend,
            )  # fmt: skip
    except TipError as exc:
        raise UserError(f"cannot build the valuation: {exc}") from None
    try:
        refs = publish_blobs(publication, open_storage())
    except StorageError as exc:
        raise UserError(f"cannot publish the valuation's blobs: {exc}") from None
    terms = {
        "tip": publication.terms.to_json(),
        "features": feature_names,
        "label": label,
        **{name: ref.model_dump(mode="json") for name, ref in refs.items()},
        "decrypt_window": decrypt_window,
        "max_examples": max_examples,
    }
    try:
        ValuationSpec.model_validate(terms)
    except ValidationError as exc:
        problems = "; ".join(f"{p}: {m}" for p, m in describe(exc, ValuationSpec))
        raise UserError(f"the valuation terms are not valid: {problems}") from None
    secret = _secret_target(out_path, refs["context"].sha256)
    write_secret(secret, publication.buyer.to_bytes(secret=True))
    if proposal_path is not None:
        template = proposal_template(terms, title, min_participants, max_slash_bps)
        try:
            with proposal_path.open("x") as fh:
                fh.write(json.dumps(template, indent=2) + "\n")
        except FileExistsError:
            raise UserError(f"{proposal_path} already exists; choose another --proposal") from None
        except OSError as exc:
            raise UserError(f"cannot write {proposal_path}: {exc.strerror}") from None
    summary = {
        "valuation": terms,
        "secret": str(secret),
        "rows": {"train": len(x_train), "eval": len(x_eval)},
        "classes": n_classes,
        "train_accuracy": stats["train_accuracy"],
        "eval_accuracy": stats["eval_accuracy"],
        "proposal": None if proposal_path is None else str(proposal_path),
    }
    if as_json:
        emit_json(summary)
        return
    out.print(
        f"trained a softmax regression on {len(x_train):,} rows ({len(feature_names)} features, "
        f"{n_classes} classes): accuracy {stats['train_accuracy']:.3f} on {train_path.name}, "
        f"{stats['eval_accuracy']:.3f} on {eval_path.name}",
        highlight=False,
    )
    for name, ref in refs.items():
        out.print(f"published the {name} ({ref.size:,} bytes) at {ref.uri}", highlight=False)
    out.print(
        f"saved the SECRET context (mode 0600) to {secret}: keep it private and keep it; "
        f"`market valuation report JOB --secret {secret}` needs it after the deadline",
        highlight=False,
    )
    if proposal_path is not None:
        out.print(
            f"wrote a valuation proposal to {proposal_path}: post it with `market bounty post "
            f"{proposal_path} --budget ... --deadline ...`",
            highlight=False,
        )
    out.print(
        'the proposal\'s "valuation" terms (its map is row_count, its reduce count, its '
        'payout_rule "influence"):',
        highlight=False,
    )
    click.echo(json.dumps(terms, indent=2))


# ------------------------------------------------------------------------------ report
def _job_proposal(escrow: Any, view: Any) -> Any:
    """The job's proposal, checked against its on-chain hash (None when it cannot be read)."""
    from nodes.jobs import JobSpecError, proposal_for

    try:
        return proposal_for(escrow, view)
    except JobSpecError as exc:
        err.print(f"warning: {exc}; the secret cannot be checked against it", highlight=False)
        return None


@click.command("report")
@click.argument("job_id", type=click.IntRange(0))
@click.option(
    "--secret",
    "secret_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The secret context `market valuation publish` saved "
    "(default: the one it saved for this job's context in $MARKET_HOME/valuation).",
)
@network_options
@account_options
@json_option
def report_cmd(
    job_id: int, secret_path: Path | None, network: Net, signer: Signer, as_json: bool
) -> None:
    """Decrypt a valuation job's scores and report the totals to its committee.

    After the deadline, once the committee has agreed on the participants: fetch each one's
    encrypted scores from the committee, decrypt them with the secret context, and post one
    report (each dataset's total score), signed by --account, which must be the job's buyer,
    to every member. Reports are taken until the deadline plus the job's decrypt_window;
    without one the pool is split equally and nobody is slashed."""
    from compute.kinds.valuation import ValuationProposal
    from market.escrow import EscrowClient, JobState
    from market.staking import StakingClient
    from nodes.valuation import NotReady, ValuationError, report_scores

    with network() as net:
        escrow = EscrowClient(net.chain, net.deployment)
        staking = StakingClient(net.chain, net.deployment)
        view = existing_job(escrow, job_id)
        if view.state is not JobState.POSTED:
            raise UserError(
                f"job {job_id} is already {view.state.name.lower()}; a report is too late"
                + (f" (its result: `market bounty result {job_id}`)"
                   if view.state is JobState.FINALIZED else "")
            )  # fmt: skip
        if signer.address.lower() != view.buyer.lower():
            raise UserError(
                f"job {job_id} was posted by {view.buyer}, and --account {signer.alias} is "
                f"{signer.address}: only the job's buyer can report its scores"
            )
        proposal = _job_proposal(escrow, view)
        spec = proposal.valuation if isinstance(proposal, ValuationProposal) else None
        if proposal is not None and spec is None:
            raise UserError(f"job {job_id} is a {proposal.kind} job, not a valuation job")
        if secret_path is None:
            if spec is None:
                raise UserError(f"name the secret context of job {job_id} with --secret FILE")
            secret_path = default_secret_path(spec.context.sha256)
            if not secret_path.exists():
                raise UserError(
                    f"no secret context for job {job_id} in {secret_path.parent} (looked for "
                    f"{secret_path.name}); pass the file `market valuation publish` saved with "
                    "--secret"
                )
        context = load_secret(secret_path)
        if spec is not None:
            made = hashlib.sha256(context.public_context()).hexdigest()
            if made != spec.context.sha256:
                raise UserError(
                    f"{secret_path} is not the secret of job {job_id}: its public context has "
                    f"SHA-256 {made}, the job's has {spec.context.sha256}"
                )
        members = list(view.committee)
        endpoints = [staking.heavy_node(m).endpoint for m in members]
        window = spec.decrypt_window if spec is not None else None
        now = net.chain.clock()
        account = signer.unlock()
        try:
            with step(f"decrypting and reporting the scores of job {job_id}"):
                report, per_row, failed = report_scores(account, context, job_id, endpoints)
        except NotReady as exc:
            when = (
                f"submissions close {format_time(view.deadline)}; " if now < view.deadline else ""
            )
            raise UserError(
                f"job {job_id} is not ready for a report: the committee has not agreed on its "
                f"participants yet ({exc}); {when}retry once it has"
            ) from None
        except ValuationError as exc:
            raise UserError(f"job {job_id}: {exc}") from None
    settles = _settlement_expected(job_id, endpoints, failed)
    taken = [m for i, m in enumerate(members, start=1) if i not in failed]
    refused = {members[i - 1]: reason for i, reason in failed.items()}
    result = {
        "job": job_id,
        "scores": dict(report.scores),
        "rows": {dataset: int(len(rows)) for dataset, rows in sorted(per_row.items())},
        "accepted_by": taken,
        "refused_by": refused,
        "report": report.to_json(),
        "reports_until": view.deadline + window if window is not None else None,
        "settles_by": settles["decide_by"] if settles else None,
        "settles_early": bool(settles and settles["agreed"]),
    }
    if as_json:
        emit_json(result)
        return
    ranked = sorted(report.scores, key=lambda d: -report.scores[d])
    rows = [[d, f"{len(per_row[d]):,}", f"{report.scores[d]:.6g}"] for d in ranked]
    out.print(table(f"Job {job_id}: decrypted scores", ["dataset", "rows", "total score"], rows))
    out.print(
        f"reported to {len(taken)} of {len(members)} committee members: {', '.join(taken)}",
        highlight=False,
    )
    for member, reason in refused.items():
        err.print(f"{member} did not take the report: {reason}", highlight=False)
    out.print(
        "positive scores are predicted to lower your evaluation loss; the committee settles on "
        "this report " + _settles_text(settles) + f" (`market bounty wait {job_id}` follows it)",
        highlight=False,
    )


def _settlement_expected(
    job_id: int, endpoints: list[str], failed: dict[int, str]
) -> dict[str, Any] | None:
    """What a member that took the report says about settling (`GET /jobs/{id}/valuation`:
    which members it knows took a report, and when it decides at the latest)."""
    import requests

    from market.cli.progress import member_status
    from nodes import api

    took = [e for i, e in enumerate(endpoints, start=1) if i not in failed]
    answer = member_status(requests.Session(), took, api.valuation(job_id))
    if answer is None or answer[0] != 200 or "decide_by" not in answer[1]:
        return None
    return dict(answer[1])


def _settles_text(settles: dict[str, Any] | None) -> str:
    if settles is None:
        return "once every member that agreed on the participants holds it"
    if settles.get("agreed") or settles.get("decided"):
        return "now: every member that agreed on the participants holds it"
    members, taken = settles.get("members", []), settles.get("taken_by", [])
    return (
        f"as soon as all {len(members)} members that agreed on the participants hold it "
        f"({len(taken)} known to so far), at the latest at {format_time(int(settles['decide_by']))}"
    )


COMMANDS = (publish_cmd, report_cmd)
"""The buyer's valuation commands, which `market valuation` holds with its figure."""


@click.group("valuation")
def valuation_group() -> None:
    """Data valuation (TIP): encrypted gradient influence.

    A buyer publishes its model and encrypted query (`publish`), posts a valuation proposal
    with the terms it prints (`market bounty post`), and after the deadline decrypts and
    reports the providers' scores (`report`)."""


for _command in COMMANDS:
    valuation_group.add_command(_command)


@valuation_group.command("figure")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@click.option("--k", default=1024, show_default=True, type=click.IntRange(1))
@click.option("--examples", default=10_000, show_default=True, type=click.IntRange(10))
@click.option("--seed", default=0, show_default=True)
def valuation_figure_cmd(path: str, k: int, examples: int, seed: int) -> None:
    """Write a PNG of per-example influence across providers (the TIP market figure)."""
    from market.bench.valuation import valuation_figure

    with err.status("scoring the market's examples under CKKS"):
        valuation_figure(path, examples=examples, seed=seed, k=k)
    click.echo(f"wrote {path}")
