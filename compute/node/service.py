"""The heavy node's HTTP API (FastAPI; OpenAPI docs at `/docs`, schema at `/openapi.json`).

Every refusal is a 4xx with a JSON `{"detail": "..."}` that says why; nothing is stored for a
refused request. Bodies larger than `max_body` bytes are refused before they are read.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.base import BaseHTTPMiddleware

from compute.node.heavy import HeavyNode, Rejected

JobId = Annotated[int, Path(ge=1, lt=2**63, description="The job's on-chain id")]

MAX_BODY = 8 * 1024 * 1024
"""Largest request body: a share of a 100,000-value vector sealed and base64-encoded is ~1 MB."""


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
    """A committee member's EIP-712 signature over the job's result or abort digest."""

    model_config = ConfigDict(extra="forbid")
    digest: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    signer: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class ScoresBody(BaseModel):
    """A valuation job's score report, signed by the job's buyer (EIP-191 over its canonical
    JSON); `peer` and `peer_signature` when a committee member forwards it."""

    model_config = ConfigDict(extra="forbid")
    report: dict[str, Any] = Field(description='{"job": id, "scores": {dataset: total}}')
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")
    peer: int | None = Field(default=None, ge=1, le=16)
    peer_signature: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{130}$")


Dataset = Annotated[str, Path(pattern=r"^0x[0-9a-f]{64}$", description="A dataset id")]


class Stored(BaseModel):
    job: int
    stored: bool = True
    dataset: str | None = None
    duplicate: bool = False


class BodyLimit(BaseHTTPMiddleware):
    def __init__(self, app: Any, max_body: int) -> None:
        super().__init__(app)
        self.max_body = max_body

    async def dispatch(self, request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return JSONResponse(
                {"detail": f"body larger than {self.max_body} bytes"}, status_code=413
            )
        if length is None and request.method == "POST":
            body = await request.body()
            if len(body) > self.max_body:
                return JSONResponse(
                    {"detail": f"body larger than {self.max_body} bytes"}, status_code=413
                )
        return await call_next(request)


def create_app(node: HeavyNode, max_body: int = MAX_BODY) -> FastAPI:
    app = FastAPI(
        title="market heavy node",
        description="Collects sealed shares for the jobs this node serves and runs the secure "
        "reduce with its committee.",
        version="1",
    )
    app.add_middleware(BodyLimit, max_body=max_body)

    @app.exception_handler(Rejected)
    async def rejected(_: Request, exc: Rejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"node": node.address, "ok": True}

    @app.post("/jobs/{job_id}/submissions", response_model=Stored)
    def submit(job_id: JobId, body: SubmissionBody) -> Any:
        return node.accept_submission(job_id, body.model_dump())

    @app.post("/jobs/{job_id}/peer", response_model=Stored)
    def peer(job_id: JobId, body: PeerBody) -> Any:
        return node.accept_peer(job_id, body.model_dump())

    @app.post("/jobs/{job_id}/signatures", response_model=Stored)
    def signature(job_id: JobId, body: SignatureBody) -> Any:
        return node.accept_signature(job_id, body.model_dump())

    @app.get("/jobs/{job_id}")
    def status(job_id: JobId) -> dict[str, Any]:
        return node.status(job_id)

    @app.get("/jobs/{job_id}/valuation")
    def valuation(job_id: JobId) -> dict[str, Any]:
        """A valuation job's agreed participants and when the buyer's report is due."""
        return node.valuation_status(job_id)

    @app.get("/jobs/{job_id}/payloads/{dataset}", response_class=Response)
    def payload(job_id: JobId, dataset: Dataset) -> Response:
        """A participant's CKKS-encrypted scores (only the buyer's secret key opens them)."""
        return Response(node.scores_payload(job_id, dataset), media_type="application/octet-stream")

    @app.post("/jobs/{job_id}/scores", response_model=Stored)
    def scores(job_id: JobId, body: ScoresBody) -> Any:
        return node.accept_scores(job_id, body.model_dump(exclude_none=True))

    @app.get("/jobs/{job_id}/result", response_class=Response)
    def result(job_id: JobId) -> Response:
        return Response(node.result_document(job_id), media_type="application/json")

    return app


class Server:
    """A uvicorn server in a thread, on 127.0.0.1 (for tests, the demo, and `market node`)."""

    def __init__(self, app: FastAPI, port: int = 0, host: str = "127.0.0.1") -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the heavy node's HTTP server did not start")
            threading.Event().wait(0.02)
        (sock,) = [s for server in self.server.servers for s in server.sockets][:1]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
