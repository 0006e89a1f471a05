"""The heavy node's API is spelled once (`nodes/api.py`) and called through one client
(`nodes/client.py`): no other module of `nodes/` or `market/` writes one of its paths, the
server serves exactly the routes `api` names, and the client refuses redirects and retries a
failed connection only when asked."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import requests

from nodes import api
from nodes.client import HeavyClient

ROOT = Path(__file__).resolve().parents[2]
SPELLERS = {ROOT / "nodes" / "api.py", ROOT / "nodes" / "client.py"}


def _route_literals(path: Path) -> list[str]:
    """The string literals of `path` that hold a heavy node's path (`/jobs/...`), f-strings'
    parts included; a string statement (a docstring, an attribute's docstring) is prose and
    may name a route."""
    tree = ast.parse(path.read_text())
    prose = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return sorted(
        f"{path.name}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in prose
        and "/jobs" in node.value
    )


def test_no_route_is_spelled_outside_api_and_client() -> None:
    sources = [p for top in ("nodes", "market") for p in sorted((ROOT / top).rglob("*.py"))]
    assert len(sources) > 50
    hits = [f"{p.parent.relative_to(ROOT)}/{hit}" for p in sources if p not in SPELLERS
            for hit in _route_literals(p)]  # fmt: skip
    assert not hits, "heavy-node paths outside nodes/api.py (call its functions):\n" + "\n".join(
        hits
    )
    assert _route_literals(ROOT / "nodes" / "api.py")  # the check sees the routes where they are


def test_the_check_sees_an_f_string_and_spares_prose(tmp_path: Path) -> None:
    source = tmp_path / "caller.py"
    source.write_text(
        'def url(e, j):\n    """GET /jobs/{id}"""\n    return f"{e}/jobs/{j}/peer"\n'
        'BASE = "/jobs"\n'
    )
    assert _route_literals(source) == ["caller.py:3: '/jobs/'", "caller.py:4: '/jobs'"]


def test_the_server_serves_exactly_the_routes_api_names() -> None:
    from nodes.service import create_app

    named = {
        value
        for name, value in vars(api).items()
        if name.isupper() and isinstance(value, str) and value.startswith("/")
    }
    app = create_app(None)  # type: ignore[arg-type]  (routes only: no request is served)
    served = {r.path for r in app.routes if getattr(r, "endpoint", None) is not None} - {
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
    }
    assert served == named
    assert api.payload(7, "0xab") == "/jobs/7/payloads/0xab"
    assert api.submissions(3) == "/jobs/3/submissions"


class _Session:
    """Answers like `requests.Session`, recording each call; fails the first `failures`."""

    def __init__(self, failures: int = 0, error: type[Exception] = requests.ConnectionError):
        self.failures, self.error = failures, error
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def _answer(self, method: str, url: str, **options: Any) -> str:
        self.calls.append((method, url, options))
        if self.failures:
            self.failures -= 1
            raise self.error("down")
        return "answer"

    def get(self, url: str, **options: Any) -> str:
        return self._answer("GET", url, **options)

    def post(self, url: str, **options: Any) -> str:
        return self._answer("POST", url, **options)


def test_the_client_refuses_redirects_and_keeps_its_timeout() -> None:
    http = _Session()
    client = HeavyClient("http://node:8000/", http, timeout=5)
    client.status(4)
    client.peer(4, {"a": 1})
    assert http.calls == [
        ("GET", "http://node:8000/jobs/4", {"timeout": 5, "allow_redirects": False}),
        (
            "POST",
            "http://node:8000/jobs/4/peer",
            {"json": {"a": 1}, "timeout": 5, "allow_redirects": False},
        ),
    ]


def test_a_submission_retries_a_failed_connection_and_a_peer_message_does_not() -> None:
    http = _Session(failures=2)
    assert HeavyClient("http://node", http).submit(1, {}) == "answer"
    assert len(http.calls) == 3
    down = _Session(failures=3)
    with pytest.raises(requests.ConnectionError):
        HeavyClient("http://node", down).submit(1, {})
    assert len(down.calls) == 3
    once = _Session(failures=1)
    with pytest.raises(requests.ConnectionError):
        HeavyClient("http://node", once).peer(1, {})  # the outbox resends it on the next tick
    assert len(once.calls) == 1
    slow = _Session(failures=1, error=requests.Timeout)
    with pytest.raises(requests.Timeout):  # a node that took the body may hold it: not resent
        HeavyClient("http://node", slow).submit(1, {})
    assert len(slow.calls) == 1


def test_every_error_of_nodes_derives_from_node_error() -> None:
    import importlib
    import inspect

    from nodes.errors import NodeError

    defined = []
    for path in sorted((ROOT / "nodes").glob("*.py")):
        module = importlib.import_module(f"nodes.{path.stem}")
        defined += [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, BaseException) and c.__module__ == module.__name__
        ]
    assert len(defined) >= 12
    assert [c.__name__ for c in defined if not issubclass(c, NodeError)] == []


def test_each_refusal_has_its_status_in_one_table() -> None:
    from nodes import errors

    refusals = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.Rejected) and c is not errors.Rejected
    ]
    assert set(refusals) == set(api.STATUS)
    assert errors.Conflict("late").status == 409 == api.status_of(errors.Conflict("late"))
    assert errors.Malformed("x").detail == "x" and errors.Malformed("x").status == 422
