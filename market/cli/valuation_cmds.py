"""The buyer's side of a valuation (TIP) job on the command line: `market valuation publish`
trains the buyer's model on its own tables, publishes the model, the public CKKS context and
`Enc(q)` to content-addressed storage, shares the query `q` for the job's committee (the
proposal commits to each share by hash), keeps the secret context and the shares in private
files and prints the proposal's `valuation` terms; `market valuation query` posts the shares,
sealed to each member, after posting (the committee computes each provider's total from them:
no party decides the payouts alone); `market valuation scores` decrypts the per-row scores for
the buyer's own insight after the round."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from compute.proposal import MAX_COMMITTEE
from market.cli.common import (
    BadValue,
    Signer,
    UserError,
    account_options,
    emit_json,
    err,
    existing_job,
    json_option,
    network_options,
    out,
    step,
    table,
)
from market.home import Home

Net = Callable[[], Any]

SECRET_SUFFIX = ".secret"
QUERY_SUFFIX = ".query"
QUERY_FORMAT = "market-valuation-query/1"
EXIT_NOT_YET = 5
"""`market valuation scores` before the committee opened the totals: retry later."""
QUERY_RETRY_S = 10.0
"""How long `query` keeps retrying members that have not taken the job on yet."""


class NotYet(UserError):
    """Not ready yet (one line, exit code 5): the same command succeeds later."""

    exit_code = EXIT_NOT_YET


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


def query_path_beside(secret: Path) -> Path:
    """Where `publish` keeps the query shares: beside the secret context, `.secret` replaced by
    `.query` (or `.query` appended to another name)."""
    if secret.name.endswith(SECRET_SUFFIX):
        return secret.with_name(secret.name[: -len(SECRET_SUFFIX)] + QUERY_SUFFIX)
    return secret.with_name(secret.name + QUERY_SUFFIX)


def query_bytes(shared: Any, terms: dict[str, Any], context_sha256: str) -> bytes:
    """The buyer's query shares as saved (JSON, `QUERY_FORMAT`): each committee position's
    nonce (hex) and share (base64 of k little-endian uint64 field elements), with the
    commitments the proposal states and the public context they go with. Secret: a majority
    of the shares gives `q`."""
    import base64

    import numpy as np

    document = {
        "format": QUERY_FORMAT,
        "context_sha256": context_sha256,
        "q_bits": terms["q_bits"],
        "g_bits": terms["g_bits"],
        "commitments": list(terms["commitments"]),
        "nonces": [nonce.hex() for nonce in shared.nonces],
        "shares": [
            base64.b64encode(np.ascontiguousarray(share, dtype="<u8").tobytes()).decode()
            for share in shared.shares
        ],
    }
    return (json.dumps(document, indent=1) + "\n").encode()


def load_query(path: Path) -> Any:
    """The `compute.products.SharedQuery` saved in `path` (`UserError` if it is not one)."""
    import base64
    import binascii

    import numpy as np

    from compute.products import NONCE_BYTES, SharedQuery

    try:
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise UserError(f"cannot read the query shares {path}: {exc.strerror}") from None
    except ValueError:
        document = None
    not_shares = UserError(
        f"{path} is not a buyer's query shares saved by `market valuation publish` (a JSON "
        f"{QUERY_FORMAT} file)"
    )
    if not isinstance(document, dict) or document.get("format") != QUERY_FORMAT:
        raise not_shares
    try:
        nonces = tuple(bytes.fromhex(n) for n in document["nonces"])
        raw = [base64.b64decode(s, validate=True) for s in document["shares"]]
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise not_shares from None
    sizes = {len(r) for r in raw}
    if (
        not nonces
        or len(nonces) != len(raw)
        or any(len(n) != NONCE_BYTES for n in nonces)
        or len(sizes) != 1
        or sizes.pop() % 8
    ):
        raise not_shares
    shares = np.stack([np.frombuffer(r, dtype="<u8").astype(np.uint64) for r in raw])
    return SharedQuery(shares, nonces)


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
    "--committee-size",
    default=3,
    show_default=True,
    type=click.IntRange(3, MAX_COMMITTEE),
    help="The job's committee: odd; the query is shared (N+1)/2-of-N, one share per member.",
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
    "(default: $MARKET_HOME/valuation/<context sha256>.secret); the query shares go beside "
    "it (.query).",
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
    committee_size: int,
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
    projected influence direction of EVAL's loss) is encrypted under a fresh CKKS key (the
    buyer's own view of the per-row scores) and shared (N+1)/2-of-N for the job's committee of
    --committee-size N, which computes every provider's total from it (the payouts). The model,
    the public CKKS context and Enc(q) go to content-addressed storage (an IPFS node when
    $MARKET_IPFS_API is set, else $MARKET_HOME/storage). Saved, mode 0600, to --out or
    $MARKET_HOME/valuation/: the secret context (<sha256>.secret, the only way to read the
    per-row scores: `market valuation scores`) and the query shares (<sha256>.query, which
    `market valuation query JOB` posts after `market bounty post`; the proposal commits to
    them). Prints the proposal's "valuation" terms."""
    import secrets

    from pydantic import ValidationError

    from compute.kinds import ValuationSpec
    from compute.problems import describe
    from compute.randomness import os_rng
    from market.storage import open_storage
    from market.storage.errors import StorageError
    from market.valuation.tip.errors import TipError
    from market.valuation.tip.he import TenSealCKKS
    from nodes.valuation import committee_terms, publish_blobs

    feature_names = _names(features, "--features")
    label = label.strip()
    if not label:
        raise UserError("--label must name the label column")
    if label in feature_names:
        raise UserError(f"--label {label!r} is also in --features; the label is its own column")
    if committee_size % 2 == 0:
        raise BadValue(
            f"--committee-size must be odd (the committee multiplies shares (N+1)/2-of-N); "
            f"give {committee_size - 1} or {committee_size + 1}"
        )
    if out_path is not None and not out_path.is_dir():
        for path in (out_path, query_path_beside(out_path)):
            if path.exists():
                _refuse_existing(path)  # before any work
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
    threshold = (committee_size + 1) // 2
    committee, shared = committee_terms(
        publication.q, max_examples * publication.gradient_scale, committee_size, threshold,
        os_rng(),
    )  # fmt: skip
    terms = {
        "tip": publication.terms.to_json(),
        "features": feature_names,
        "label": label,
        **{name: ref.model_dump(mode="json") for name, ref in refs.items()},
        "committee": committee,
        "max_examples": max_examples,
    }
    try:
        ValuationSpec.model_validate(terms)
    except ValidationError as exc:
        problems = "; ".join(f"{p}: {m}" for p, m in describe(exc, ValuationSpec))
        raise UserError(f"the valuation terms are not valid: {problems}") from None
    secret = _secret_target(out_path, refs["context"].sha256)
    shares_path = query_path_beside(secret)
    if shares_path.exists():
        _refuse_existing(shares_path)
    write_secret(secret, publication.buyer.to_bytes(secret=True))
    write_secret(shares_path, query_bytes(shared, committee, refs["context"].sha256))
    if proposal_path is not None:
        template = proposal_template(terms, title, min_participants, max_slash_bps)
        template["committee_size"] = committee_size
        template["reduce"]["threshold"] = threshold
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
        "query_shares": str(shares_path),
        "committee_size": committee_size,
        "threshold": threshold,
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
        f"saved the SECRET context (mode 0600) to {secret}: keep it private; `market valuation "
        "scores JOB` decrypts the per-row scores with it after the round",
        highlight=False,
    )
    out.print(
        f"saved the SECRET query shares for a committee of {committee_size} (mode 0600) to "
        f"{shares_path}: after posting, `market valuation query JOB` sends each member its "
        "share (without them the committee aborts and refunds you)",
        highlight=False,
    )
    if proposal_path is not None:
        out.print(
            f"wrote a valuation proposal (committee of {committee_size}, threshold {threshold}) "
            f"to {proposal_path}: post it with `market bounty post {proposal_path} --budget ... "
            "--deadline ...`",
            highlight=False,
        )
    out.print(
        'the proposal\'s "valuation" terms (its map is summed_gradient, its reduce a sum under '
        'Shamir sharing, its payout_rule "influence"):',
        highlight=False,
    )
    click.echo(json.dumps(terms, indent=2))


# ------------------------------------------------------------------------------ the job
def default_query_path(context_sha256: str, home: Home | None = None) -> Path:
    """Where `publish` keeps the query shares of the public context with this SHA-256."""
    return secret_dir(home) / f"{context_sha256}{QUERY_SUFFIX}"


def _job_proposal(escrow: Any, view: Any) -> Any:
    """The job's proposal, checked against its on-chain hash (None when it cannot be read)."""
    from nodes.jobs import JobSpecError, proposal_for

    try:
        return proposal_for(escrow, view)
    except JobSpecError as exc:
        err.print(f"warning: {exc}; the secret cannot be checked against it", highlight=False)
        return None


def _valuation_spec(job_id: int, proposal: Any) -> Any:
    """The valuation terms of a job's proposal (None when it could not be read)."""
    from compute.kinds.valuation import ValuationProposal

    if proposal is not None and not isinstance(proposal, ValuationProposal):
        raise UserError(f"job {job_id} is a {proposal.kind} job, not a valuation job")
    return None if proposal is None else proposal.valuation


def _default_file(job_id: int, spec: Any, option: str, what: str, path_for: Any) -> Path:
    """The file `publish` saved for this job's public context, or `UserError` naming
    `option`."""
    if spec is None:
        raise UserError(f"name the {what} of job {job_id} with {option} FILE")
    path: Path = path_for(spec.context.sha256)
    if not path.exists():
        raise UserError(
            f"no {what} for job {job_id} in {path.parent} (looked for {path.name}); pass the "
            f"file `market valuation publish` saved with {option}"
        )
    return path


# ------------------------------------------------------------------------------ query
def sealed_query(path: Path, job_id: int, shared: Any, keys: Sequence[bytes]) -> Any:
    """The job's late input `query` (`nodes.valuation.seal_query`), sealed once and kept in
    `path` (mode 0600): a second run of `query` sends the very same input. A second sealing
    would be a different input, and a committee that sees two from the buyer cannot agree on
    one (it aborts)."""
    from nodes.valuation import seal_query

    if path.exists():
        try:
            value = json.loads(path.read_bytes())
        except (OSError, ValueError):
            value = None
        if (
            not isinstance(value, dict)
            or value.get("job_id") != job_id
            or not isinstance(value.get("shares"), list)
            or len(value["shares"]) != len(keys)
        ):
            raise UserError(
                f"{path} is not job {job_id}'s sealed query; move it away only if no member "
                "took the query yet (a second, different one makes the committee abort)"
            )
        return value
    value = seal_query(job_id, shared, keys)
    write_secret(path, (json.dumps(value) + "\n").encode())
    return value


@click.command("query")
@click.argument("job_id", type=click.IntRange(0))
@click.option(
    "--shares",
    "shares_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The query shares `market valuation publish` saved (default: the ones it saved for "
    "this job's context in $MARKET_HOME/valuation, <sha256>.query).",
)
@network_options
@account_options
@json_option
def query_cmd(
    job_id: int, shares_path: Path | None, network: Net, signer: Signer, as_json: bool
) -> None:
    """Send your query shares to a valuation job's committee: run it right after posting.

    Each member gets its own share of q, sealed to the encryption key it registered, in one
    input signed by --account (the job's buyer); the proposal commits to every share, so only
    the shares `publish` saved for it are taken. From them the committee computes each
    provider's total influence, which the payouts follow. Without them the committee aborts at
    its decide_by time (the deadline plus a quarter of the settlement grace) and the budget is
    refunded. Members that have not taken the job on yet are asked again for a few seconds. The
    sealed input is kept beside the shares (<sha256>.query.jobN): running this again sends the
    same one (a different one would make the committee abort)."""
    from market.escrow import EscrowClient, JobState
    from market.staking import StakingClient
    from nodes.late import deliver

    with network() as net:
        escrow = EscrowClient(net.chain, net.deployment)
        staking = StakingClient(net.chain, net.deployment)
        view = existing_job(escrow, job_id)
        if view.state is not JobState.POSTED:
            raise UserError(
                f"job {job_id} is already {view.state.name.lower()}; its query is too late"
            )
        if signer.address.lower() != view.buyer.lower():
            raise UserError(
                f"job {job_id} was posted by {view.buyer}, and --account {signer.alias} is "
                f"{signer.address}: only the job's buyer posts its query"
            )
        from nodes.jobs import JobSpecError, proposal_for

        try:
            proposal = proposal_for(escrow, view)
        except JobSpecError as exc:
            raise UserError(f"cannot read job {job_id}'s proposal: {exc}") from None
        spec = _valuation_spec(job_id, proposal)
        if shares_path is None:
            shares_path = _default_file(
                job_id, spec, "--shares", "query shares", default_query_path
            )
        shared = load_query(shares_path)
        if shared.commitments() != list(spec.committee.commitments):
            held, committed = len(shared.nonces), len(spec.committee.commitments)
            why = (
                f"{held} shares for a committee of {committed}"
                if held != committed
                else "another query's or another sharing's"
            )
            raise UserError(
                f"{shares_path} holds query shares that job {job_id}'s proposal does not commit "
                f"to ({why}); pass the .query file `market valuation publish` saved with this "
                "job's proposal: --shares FILE"
            )
        if not view.drawn:
            raise UserError(
                f"job {job_id}'s committee is not drawn yet; retry in a few seconds "
                f"(`market bounty show {job_id}`)"
            )
        members = list(view.committee)
        nodes = [staking.heavy_node(m) for m in members]
        account = signer.unlock()
        sealed = shares_path.with_name(f"{shares_path.name}.job{job_id}")
        value = sealed_query(sealed, job_id, shared, [n.encryption_key for n in nodes])
        with step(f"posting the query shares of job {job_id} to its committee"):
            failed = deliver(account, job_id, "query", value, [n.endpoint for n in nodes],
                             retry_s=QUERY_RETRY_S)  # fmt: skip
        taken = [i for i in range(1, len(members) + 1) if i not in failed]
    if not taken:
        reasons = "; ".join(f"{members[i - 1]}: {r}" for i, r in failed.items())
        raise UserError(
            f"no committee member took the query of job {job_id} ({reasons}); retry "
            f"`market valuation query {job_id}` before the committee aborts"
        )
    took = [members[i - 1] for i in taken]
    refused = {members[i - 1]: reason for i, reason in failed.items()}
    if as_json:
        emit_json({"job": job_id, "members": took, "failed": refused})
        return
    out.print(
        f"job {job_id}: {len(took)} of {len(members)} committee members took the query shares: "
        f"{', '.join(took)}",
        highlight=False,
    )
    for member, reason in refused.items():
        err.print(f"{member} did not take them: {reason}", highlight=False, soft_wrap=True)
    if refused:
        err.print(
            "the members that took them forward them to the others; if one still lacks them "
            f"at the deadline, run `market valuation query {job_id}` again",
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        "the committee computes each provider's total influence once submissions close "
        f"(`market bounty wait {job_id}` follows it)",
        highlight=False,
    )


# ------------------------------------------------------------------------------ scores
@click.command("scores")
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
@json_option
def scores_cmd(job_id: int, secret_path: Path | None, network: Net, as_json: bool) -> None:
    """Decrypt a valuation job's per-row scores, for your own insight, after its round.

    Each participant sent its rows' scores encrypted under your CKKS key; this fetches them
    from the committee and decrypts them here with the secret context. They inform you only:
    the payouts follow the totals the committee computed (`market bounty result JOB`). Exits
    with code 5 while the committee has not opened the totals yet."""
    import numpy as np

    from market.escrow import EscrowClient, JobState
    from market.staking import StakingClient
    from nodes.valuation import NotReady, ValuationError, fetch_scores

    with network() as net:
        escrow = EscrowClient(net.chain, net.deployment)
        staking = StakingClient(net.chain, net.deployment)
        view = existing_job(escrow, job_id)
        if view.state in (JobState.ABORTED, JobState.EXPIRED):
            raise UserError(f"job {job_id} was {view.state.name.lower()}: it has no scores")
        spec = _valuation_spec(job_id, _job_proposal(escrow, view))
        if secret_path is None:
            secret_path = _default_file(
                job_id, spec, "--secret", "secret context", default_secret_path
            )
        context = load_secret(secret_path)
        if spec is not None:
            made = hashlib.sha256(context.public_context()).hexdigest()
            if made != spec.context.sha256:
                raise UserError(
                    f"{secret_path} is not the secret of job {job_id}: its public context has "
                    f"SHA-256 {made}, the job's has {spec.context.sha256}"
                )
        if not view.drawn:
            raise NotYet(f"job {job_id} has no scores yet: its committee is not drawn")
        endpoints = [staking.heavy_node(m).endpoint for m in view.committee]
        try:
            with step(f"fetching and decrypting the scores of job {job_id}"):
                per_row = fetch_scores(context, job_id, endpoints)
        except NotReady as exc:
            raise NotYet(
                f"job {job_id} has no scores yet ({exc}); retry once its round has ended "
                f"(`market bounty wait {job_id}`)"
            ) from None
        except ValuationError as exc:
            raise UserError(f"job {job_id}: {exc}") from None
    stats = {
        dataset: {
            "rows": int(len(rows)),
            "total": float(np.sum(rows)),
            "min": float(np.min(rows)) if len(rows) else None,
            "mean": float(np.mean(rows)) if len(rows) else None,
            "max": float(np.max(rows)) if len(rows) else None,
        }
        for dataset, rows in sorted(per_row.items())
    }
    if as_json:
        emit_json({"job": job_id, "scores": stats, "payouts_by": "the committee's totals"})
        return
    ranked = sorted(stats, key=lambda d: -stats[d]["total"])

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.6g}"

    rows = [
        [d, f"{stats[d]['rows']:,}", *(shown(stats[d][s]) for s in ("total", "min", "mean", "max"))]
        for d in ranked
    ]
    out.print(
        table(
            f"Job {job_id}: your own view of the per-row scores (decrypted here)",
            ["dataset", "rows", "total", "min", "mean", "max"],
            rows,
        )
    )
    out.print(
        "these inform you only: the payouts follow the totals the committee computed "
        f"(`market bounty result {job_id}`); positive scores are predicted to lower your "
        "evaluation loss",
        highlight=False,
    )


# ------------------------------------------------------------------------------ result
def result_lines(valuation: Any) -> list[str]:
    """`market bounty result`'s lines for a valuation job's part of the result document
    (`nodes.results.valuation_summary`): each dataset's total influence as the committee opened
    it, its payout or slash, the void totals and the rule."""
    from market.cli.common import format_tokens

    scores = valuation.get("scores")
    if not isinstance(scores, dict):
        return [
            f"the committee's totals were void ({valuation.get('reason', 'no reason given')}): "
            f"payout rule {valuation.get('rule', 'equal')}, nobody slashed"
        ]
    void = set(valuation.get("void") or [])
    payouts = valuation.get("payouts_by_dataset") or {}
    slashes = valuation.get("slashes") or {}
    lines = [
        "each dataset's total influence q . G_p, computed by the committee (positive helps the "
        f"buyer's model; payout rule {valuation.get('rule')}):"
    ]
    for dataset in sorted(scores, key=lambda d: (d in void, -float(scores[d]))):
        parts = [
            "void (beyond any honest provider's reach: no payout, no slash)"
            if dataset in void
            else f"influence {float(scores[dataset]):.6g}"
        ]
        if dataset in payouts:
            parts.append(f"paid {format_tokens(int(payouts[dataset]))}")
        if dataset in slashes:
            parts.append(f"slashed {format_tokens(int(slashes[dataset]))}")
        lines.append(f"  {dataset}: " + ", ".join(parts))
    if void:
        lines.append(f"{len(void)} void total{'s' if len(void) > 1 else ''}: scored 0")
    return lines


report_cmd = click.Command(
    "report",
    callback=scores_cmd.callback,
    params=scores_cmd.params,
    help="The buyer's report of a valuation job after its round: its per-row scores decrypted "
    "here, the same as `market valuation scores`. The buyer reports nothing to the committee "
    "any more: the payouts follow the totals the committee computes (`market bounty result "
    "JOB`). Exits with code 5 while the committee has not opened the totals yet.",
    short_help="Your decrypted report of a job's per-row scores (as `scores`).",
)
"""`report`, the buyer's step after the round under its earlier name: it once sent the decrypted
totals to the committee; now it reads them for the buyer alone, as `scores` does."""

COMMANDS = (publish_cmd, query_cmd, scores_cmd, report_cmd)
"""The buyer's valuation commands, which `market valuation` holds with its figure."""


@click.group("valuation")
def valuation_group() -> None:
    """Data valuation (TIP): encrypted gradient influence.

    A buyer publishes its model, encrypted query and committed query shares (`publish`), posts
    a valuation proposal with the terms it prints (`market bounty post`), sends the committee
    its shares (`query`), and after the round may decrypt the per-row scores for itself
    (`scores`); the committee computes the totals the payouts follow."""


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
