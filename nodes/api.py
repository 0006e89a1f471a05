"""The heavy node's HTTP API, spelled once: every route's path (a template for the server, a
function for the clients), the request and response bodies, and the HTTP status of each
refusal. `nodes.service` serves these routes; `nodes.client.HeavyClient` calls them; nothing
else writes a heavy node's URL."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from nodes.errors import (
    BadRequest,
    Conflict,
    FeeTooLow,
    Forbidden,
    Malformed,
    NotFound,
    Rejected,
    TooMany,
    Unauthenticated,
    Unavailable,
)

# ------------------------------------------------------------------------------ the routes
HEALTH = "/health"
"""GET: the node's address, and that it answers."""
JOB = "/jobs/{job_id}"
"""GET: a job's round phase and settlement, as this node sees them."""
SUBMISSIONS = JOB + "/submissions"
"""POST `SubmissionBody`: a light node's sealed share."""
PEER = JOB + "/peer"
"""POST `PeerBody`: a round message from another committee member."""
SIGNATURES = JOB + "/signatures"
"""POST `SignatureBody`: a committee member's signature over the result or abort."""
VALUATION = JOB + "/valuation"
"""GET: a valuation job's participants, once its round opened their totals."""
PAYLOAD = JOB + "/payloads/{dataset}"
"""GET: a participant's CKKS-encrypted scores (bytes)."""
RESULT = JOB + "/result"
"""GET: the job's result document (JSON bytes)."""
LATE = JOB + "/late/{name}"
"""POST `LateBody`: a kind's late input (a forecast's outcomes), signed by its poster."""


def job(job_id: int) -> str:
    return JOB.format(job_id=job_id)


def submissions(job_id: int) -> str:
    return SUBMISSIONS.format(job_id=job_id)


def peer(job_id: int) -> str:
    return PEER.format(job_id=job_id)


def signatures(job_id: int) -> str:
    return SIGNATURES.format(job_id=job_id)


def valuation(job_id: int) -> str:
    return VALUATION.format(job_id=job_id)


def payload(job_id: int, dataset: str) -> str:
    return PAYLOAD.format(job_id=job_id, dataset=dataset)


def result(job_id: int) -> str:
    return RESULT.format(job_id=job_id)


def late(job_id: int, name: str) -> str:
    return LATE.format(job_id=job_id, name=name)


# ------------------------------------------------------------------------------ the bodies
JobId = Annotated[int, Path(ge=1, lt=2**63, description="The job's on-chain id")]
Dataset = Annotated[str, Path(pattern=r"^0x[0-9a-f]{64}$", description="A dataset id")]


class SubmissionBody(BaseModel):
    """A light node's sealed share for this heavy node, signed by the dataset's owner."""

    model_config = ConfigDict(extra="forbid")
    job: int = Field(ge=1)
    dataset: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    recipient: int = Field(ge=1, le=16)
    nonce: int = Field(ge=0, lt=2**256)
    sealed: str = Field(min_length=1, description="base64 SealedBox to the node's X25519 key")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")
    participation_bps: int = Field(ge=0, le=10_000)
    participation: str = Field(
        pattern=r"^0x[0-9a-fA-F]{130}$",
        description="the owner's EIP-712 Participation signature (consent to slashing)",
    )
    payload: str | None = Field(
        default=None,
        min_length=1,
        description="valuation jobs only: base64 CKKS-encrypted scores, the same for every node",
    )


class PeerBody(BaseModel):
    """A round message from another committee member, signed by its account (EIP-191)."""

    model_config = ConfigDict(extra="forbid")
    payload: dict[str, Any]
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class SignatureBody(BaseModel):
    """A committee member's EIP-712 signature over the job's result or abort digest, with the
    result it signs (checked against the digest) when it is a result."""

    model_config = ConfigDict(extra="forbid")
    digest: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    signer: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")
    result: dict[str, Any] | None = Field(
        default=None, description="the signed Result (hex and decimal strings), for results"
    )


LateName = Annotated[str, Path(pattern=r"^[a-z_]{1,32}$", description="The late input's name")]


class LateBody(BaseModel):
    """A kind's late input (`JobKind.late_input`), signed by its poster (EIP-191 over its
    canonical JSON); `peer` and `peer_signature` when a committee member forwards it, with
    `committed` when that member took it as its own (its signature then covers the flag)."""

    model_config = ConfigDict(extra="forbid")
    value: dict[str, Any] = Field(description='a forecast\'s {"job_id": id, "values": [...]}')
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")
    peer: int | None = Field(default=None, ge=1, le=16)
    peer_signature: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{130}$")
    committed: bool | None = None


class Stored(BaseModel):
    """The answer to a POST the node took (`duplicate` when it already held it)."""

    job: int
    stored: bool = True
    dataset: str | None = None
    duplicate: bool = False


# ------------------------------------------------------------------------------ the refusals
STATUS: dict[type[Rejected], int] = {
    BadRequest: 400,
    Unauthenticated: 401,
    FeeTooLow: 402,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Malformed: 422,
    TooMany: 429,
    Unavailable: 503,
}
"""The HTTP status each refusal is answered with (a 4xx or 503 with `{"detail": reason}`)."""


def status_of(refusal: Rejected) -> int:
    """The HTTP status of `refusal` (400 for a `Rejected` no entry of `STATUS` covers)."""
    for kind in type(refusal).__mro__:
        if kind in STATUS:
            return STATUS[kind]  # type: ignore[index]
    return 400
