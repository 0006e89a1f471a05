"""A kind's late input at the nodes (`JobKind.late_input`: a forecast's outcomes), generically:
what the heavy node needs to take one (`LateTerms`, from the job's proposal), how it checks and
digests a signed one (`parse`), and how the poster sends it to every committee member (`post`).

The rule every member follows (`nodes.heavy`): it takes a poster-signed input only at or after
`after` (unix seconds, the proposal's field the kind names), the first one it takes (from the
poster, or forwarded by a peer) is its own, which it tells every peer (with the input, signed:
`committed`); it resolves the round with that input only once every member that accepted the
job told it the same digest. Honest members commit once, so two of them never resolve with
different inputs. A poster that signs two different inputs for one job before the members agree
(or posts none) leaves them unresolved: at `decide_by` each signs an abort, which refunds the
buyer (no payout, no slash, no member's liveness penalty). See docs/forecast.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from nacl.public import PrivateKey
from pydantic import BaseModel, ValidationError

from compute.errors import ComputeError
from compute.messages import RoundConfig
from market.escrow.documents import canonical_json
from nodes import wire
from nodes.client import HeavyClient
from nodes.errors import Malformed, NodeError


class LateInputError(NodeError):
    """A late input the poster could not deliver; the message says what to do."""


@dataclass(frozen=True)
class LateTerms:
    """A job's late input: its `name` (the route's and the kind's input name), who may post it
    (`poster`, an address), from when (`after`, unix seconds), its `model`, and the round
    configuration it resolves (`config`, from a parsed input)."""

    name: str
    poster: str
    after: int
    model: type[BaseModel]
    config: Callable[[BaseModel, Member | None], RoundConfig]
    """The round configuration from a parsed input, for `member` (its index and box key) when
    the input holds something for it alone (a valuation's sealed query shares)."""
    decide_by: int
    """Unix seconds after which a member whose round is still unresolved (no input, or no
    agreed one) signs an abort, which refunds the buyer and costs no member its liveness
    penalty (the later of `after` and the deadline, plus a quarter of the settlement grace)."""


Member = tuple[int, PrivateKey]
"""A committee member as a late input sees it: its index (1..n) and its box private key."""

LateFor = Callable[[Any], LateTerms | None]
"""How a heavy node learns a job's late input (from its proposal); None for kinds without one."""


def parse(
    terms: LateTerms, job_id: int, value: Any, member: Member | None = None
) -> tuple[BaseModel, RoundConfig, bytes]:
    """The input parsed, the round configuration it gives (for `member`, when given: a
    valuation's opens its own sealed share and checks it against the proposal's commitment),
    and its digest (keccak of its canonical JSON); `Malformed` (one line) when it is not one
    for this job, or not one this member can use."""
    if not isinstance(value, dict):
        raise Malformed(f"the {terms.name} must be a JSON object")
    try:
        parsed = terms.model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or terms.name
        raise Malformed(f"malformed {terms.name}: {where}: {first['msg']}") from None
    if getattr(parsed, "job_id", job_id) != job_id:
        raise Malformed(f"the {terms.name} are for job {parsed.job_id}, not job {job_id}")  # type: ignore[attr-defined]
    try:
        config = terms.config(parsed, member)
    except (ComputeError, ValueError, NodeError) as exc:
        raise Malformed(f"malformed {terms.name}: {exc}") from None
    return parsed, config, keccak(canonical_json(parsed.model_dump(mode="json")))


RETRIED = frozenset({404, 409, 503})
"""Answers of a member that has not taken the job on yet (or is starting): `deliver` asks it
again while its `retry_s` lasts."""


def deliver(
    poster: LocalAccount,
    job_id: int,
    name: str,
    value: dict[str, Any],
    endpoints: Sequence[str],
    http: Any = None,
    retry_s: float = 0.0,
) -> dict[int, str]:
    """Sign `value` once (EIP-191 over its canonical JSON) and post it to every committee
    member, asking again for up to `retry_s` seconds the members that answered one of
    `RETRIED` or not at all. Returns the members that did not take it (index from 1 ->
    reason)."""
    http = http or requests.Session()
    body = {"value": value, "signature": wire.sign_payload(poster, value)}
    pending = list(range(1, len(endpoints) + 1))
    failed: dict[int, str] = {}
    end = time.monotonic() + retry_s
    while True:
        waiting: dict[int, str] = {}
        for index in pending:
            try:
                response = HeavyClient(endpoints[index - 1], http).late(job_id, name, body)
            except requests.RequestException as exc:
                waiting[index] = f"no answer ({type(exc).__name__})"
                continue
            if response.status_code in RETRIED:
                waiting[index] = wire.refusal_detail(response)
            elif response.status_code != 200:
                failed[index] = wire.refusal_detail(response)
        if not waiting or time.monotonic() >= end:
            return dict(sorted({**failed, **waiting}.items()))
        pending = sorted(waiting)
        time.sleep(0.5)


def post(
    poster: LocalAccount,
    job_id: int,
    name: str,
    value: dict[str, Any],
    endpoints: Sequence[str],
    http: Any = None,
) -> dict[int, str]:
    """`deliver` without retrying; raises `LateInputError` when no member took it."""
    failed = deliver(poster, job_id, name, value, endpoints, http)
    if len(failed) == len(endpoints):
        reasons = "; ".join(f"node {i}: {r}" for i, r in failed.items())
        raise LateInputError(f"no committee member took the {name} of job {job_id}: {reasons}")
    return failed
