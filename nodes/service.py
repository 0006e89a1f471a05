"""The heavy node's HTTP API (FastAPI; OpenAPI docs at `/docs`, schema at `/openapi.json`).

Every refusal is a 4xx with a JSON `{"detail": "..."}` that says why; nothing is stored for a
refused request. Bodies larger than `max_body` bytes are refused with 413 once that many bytes
have been read (at once when their Content-Length says so), and the connection is closed.
"""

from __future__ import annotations

import threading
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from nodes import api
from nodes.api import (
    Dataset,
    JobId,
    LateBody,
    LateName,
    PeerBody,
    SignatureBody,
    Stored,
    SubmissionBody,
)
from nodes.errors import Rejected
from nodes.heavy import HeavyNode

MAX_BODY = 8 * 1024 * 1024
"""Largest request body: a share of a 100,000-value vector sealed and base64-encoded is ~1 MB."""


class BodyLimit:
    """Refuses a request body larger than `max_body` bytes with 413, counting the bytes as they
    arrive: a Content-Length above the limit is refused before any is read; a chunked body, or
    one whose Content-Length understates it, is cut off once the bytes read pass the limit.
    The body is read here (at most `max_body` bytes, as the endpoint would) before the endpoint
    runs, and the 413 closes the connection, so the server reads no more of it."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._refuse(scope, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await self._refuse(scope, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, send: Any) -> None:
        response = JSONResponse(
            {"detail": f"body larger than {self.max_body} bytes"},
            status_code=413,
            headers={"connection": "close"},  # the server reads no more of this body
        )
        await response(scope, _nothing, send)


async def _nothing() -> Any:
    return {"type": "http.disconnect"}


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
        return JSONResponse({"detail": exc.detail}, status_code=api.status_of(exc))

    @app.get(api.HEALTH)
    def health() -> dict[str, Any]:
        return {"node": node.address, "ok": True}

    @app.post(api.SUBMISSIONS, response_model=Stored)
    def submit(job_id: JobId, body: SubmissionBody) -> Any:
        return node.accept_submission(job_id, body.model_dump())

    @app.post(api.PEER, response_model=Stored)
    def peer(job_id: JobId, body: PeerBody) -> Any:
        return node.accept_peer(job_id, body.model_dump())

    @app.post(api.SIGNATURES, response_model=Stored)
    def signature(job_id: JobId, body: SignatureBody) -> Any:
        return node.accept_signature(job_id, body.model_dump())

    @app.get(api.JOB)
    def status(job_id: JobId) -> dict[str, Any]:
        return node.status(job_id)

    @app.get(api.VALUATION)
    def valuation(job_id: JobId) -> dict[str, Any]:
        """A valuation job's participants, once its round opened their totals."""
        return node.valuation_status(job_id)

    @app.get(api.PAYLOAD, response_class=Response)
    def payload(job_id: JobId, dataset: Dataset) -> Response:
        """A participant's CKKS-encrypted scores (only the buyer's secret key opens them)."""
        return Response(node.scores_payload(job_id, dataset), media_type="application/octet-stream")

    @app.post(api.LATE, response_model=Stored)
    def late(job_id: JobId, name: LateName, body: LateBody) -> Any:
        """A kind's late input (a forecast's outcomes), signed by its poster."""
        return node.accept_late(job_id, name, body.model_dump(exclude_none=True))

    @app.get(api.RESULT, response_class=Response)
    def result(job_id: JobId) -> Response:
        return Response(node.result_document(job_id), media_type="application/json")

    return app


class Server:
    """A uvicorn server in a thread, on 127.0.0.1 (for tests, the demo, and `market node`)."""

    def __init__(
        self, app: FastAPI, port: int = 0, host: str = "127.0.0.1", http: Any = "auto"
    ) -> None:
        """`http`: uvicorn's HTTP protocol (a name, or an `asyncio.Protocol` class)."""
        # Clients keep connections open between submissions: a node that closed idle ones
        # after uvicorn's 5 s could close one just as a client reuses it.
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", http=http,
            timeout_keep_alive=75,
        )  # fmt: skip
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
