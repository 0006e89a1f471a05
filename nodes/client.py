"""`HeavyClient`: one heavy node's HTTP API as methods, one per route of `nodes.api`.

Light nodes post submissions with it, heavy nodes post round messages, signatures and late
inputs to their peers with it, and the buyer posts a kind's late input (a forecast's outcomes,
a valuation's query shares) and reads a valuation job's participants and encrypted scores.
Redirects are never followed (a node that answers 3xx is answered by nobody else); a POST
whose connection failed is tried again when the caller asks for `attempts` (the heavy node
answers a resent message it holds with 200). The methods return the `requests` response and
raise `requests.RequestException` when the node could not be reached: what a status means is
for the caller.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from nodes import api

TIMEOUT = 30.0
"""Seconds to wait for a heavy node's answer."""


class HeavyClient:
    def __init__(self, endpoint: str, http: Any = None, timeout: float = TIMEOUT) -> None:
        """`endpoint`: the node's `scheme://host:port` (checked by the caller, as
        `nodes.wire.node_endpoint` does); `http`: a `requests.Session` (or one that answers
        its `get` and `post`), shared by the caller's clients."""
        self.endpoint = endpoint.rstrip("/")
        self.http = http if http is not None else requests.Session()
        self.timeout = timeout

    # ------------------------------------------------------------------------------ transport
    def get(self, path: str) -> Any:
        return self.http.get(self.endpoint + path, timeout=self.timeout, allow_redirects=False)

    def post(self, path: str, body: dict[str, Any], attempts: int = 1) -> Any:
        """POST `body` as JSON; a connection that failed (refused, or closed by the node before
        it answered, as a keep-alive connection can be) is tried again, at most `attempts`
        times in all, after 0.1 s, 0.2 s, ..."""
        for attempt in range(attempts):
            try:
                return self.http.post(
                    self.endpoint + path, json=body, timeout=self.timeout, allow_redirects=False
                )
            except requests.ConnectionError:
                if attempt + 1 >= attempts:
                    raise
                time.sleep(0.1 * 2**attempt)
        raise ValueError(f"attempts must be at least 1, not {attempts}")

    # ------------------------------------------------------------------------------ the routes
    def health(self) -> Any:
        return self.get(api.HEALTH)

    def status(self, job_id: int) -> Any:
        return self.get(api.job(job_id))

    def submit(self, job_id: int, body: dict[str, Any], attempts: int = 3) -> Any:
        """A light node's sealed share (`api.SubmissionBody`)."""
        return self.post(api.submissions(job_id), body, attempts)

    def peer(self, job_id: int, body: dict[str, Any]) -> Any:
        """A round message to a committee member (`api.PeerBody`)."""
        return self.post(api.peer(job_id), body)

    def signature(self, job_id: int, body: dict[str, Any]) -> Any:
        """A signature over the job's result or abort (`api.SignatureBody`)."""
        return self.post(api.signatures(job_id), body)

    def valuation(self, job_id: int) -> Any:
        return self.get(api.valuation(job_id))

    def payload(self, job_id: int, dataset: str) -> Any:
        return self.get(api.payload(job_id, dataset))

    def result(self, job_id: int) -> Any:
        return self.get(api.result(job_id))

    def late(self, job_id: int, name: str, body: dict[str, Any]) -> Any:
        """A kind's late input, signed by its poster (`api.LateBody`)."""
        return self.post(api.late(job_id, name), body)
