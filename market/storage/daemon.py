"""A throwaway IPFS daemon for tests and local runs: the JS node from npm (`ipfs` 0.66).

No Kubo binary can be installed from the registries this project reaches, but the npm package
`ipfs` runs a daemon with the same HTTP RPC API on Node 20 (with `mortice` and
`@multiformats/mafmt` held back by npm `overrides` in package.json). `JsIpfsDaemon` gives it a
repository of its own in a temporary directory, runs it `--offline` (no bootstrap peers, no
swarm listeners, no MDNS) with its API, gateway and gRPC on 127.0.0.1 ports the OS picks, waits
until the API answers, and on `stop` ends it (SIGTERM, then SIGKILL) and removes the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from market.storage.errors import IpfsDaemonError

ROOT = Path(__file__).resolve().parents[2]
JSIPFS = ROOT / "node_modules" / ".bin" / "jsipfs"

_CONFIG = {
    # Port 0: the OS picks free ports; the daemon writes the API's address to $IPFS_PATH/api.
    "Addresses": {
        "API": "/ip4/127.0.0.1/tcp/0",
        "Gateway": "/ip4/127.0.0.1/tcp/0",
        "RPC": "/ip4/127.0.0.1/tcp/0",
        "Swarm": [],
        "Delegates": [],
    },
    "Bootstrap": [],
    "Discovery": {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}},
}


def find_jsipfs() -> Path:
    """The `jsipfs` launcher in this checkout's node_modules, or an error saying how to get it."""
    if not JSIPFS.exists():
        raise IpfsDaemonError(
            f"{JSIPFS} is missing: run `make install` (or `npm install`) in {ROOT} to install the "
            "npm package `ipfs`"
        )
    if shutil.which("node") is None:
        raise IpfsDaemonError("`node` is not on PATH: install Node 20 to run the JS IPFS daemon")
    return JSIPFS


class JsIpfsDaemon:
    """One JS IPFS daemon process on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(self, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self.repo: Path | None = None
        self.api: str | None = None  # the API multiaddr, e.g. /ip4/127.0.0.1/tcp/40223/http
        self.startup_seconds: float | None = None  # from spawning to the API's first answer
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.api is None:
            raise IpfsDaemonError("the IPFS daemon is not running: call start() first")
        parts = self.api.strip("/").split("/")  # ip4, 127.0.0.1, tcp, PORT, http
        return f"http://{parts[1]}:{parts[3]}"

    @property
    def log(self) -> str:
        """What the daemon printed so far (for error messages and debugging)."""
        if self.repo is None:
            return ""
        path = self.repo.parent / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> JsIpfsDaemon:
        """Initialise a fresh repository, spawn the daemon, and wait for its API to answer."""
        if self._process is not None:
            return self
        jsipfs = find_jsipfs()
        workdir = Path(tempfile.mkdtemp(prefix="market-ipfs-"))
        self.repo = workdir / "repo"
        config = workdir / "init-config.json"
        config.write_text(json.dumps(_CONFIG))
        env = {**os.environ, "IPFS_PATH": str(self.repo)}
        started = time.monotonic()
        with open(workdir / "daemon.log", "wb") as log:
            # `daemon --init-config` initialises the missing repository itself, saving the
            # second Node start-up that a separate `jsipfs init` would cost.
            self._process = subprocess.Popen(
                [
                    str(jsipfs),
                    "daemon",
                    "--offline",
                    "--enable-preload=false",
                    "--init-config",
                    str(config),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends Node's children too
            )
        try:
            self.api = self._wait_for_api(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """End the daemon (SIGTERM, then SIGKILL after 10 s) and delete its repository."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        if self.repo is not None:
            shutil.rmtree(self.repo.parent, ignore_errors=True)
        self.api = None

    def __enter__(self) -> JsIpfsDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_for_api(self, started: float) -> str:
        assert self.repo is not None and self._process is not None
        api_file = self.repo / "api"
        while True:
            if self._process.poll() is not None:
                raise IpfsDaemonError(
                    f"the JS IPFS daemon exited with code {self._process.returncode} while "
                    f"starting; its output:\n{self.log[-2000:]}"
                )
            if api_file.exists():
                api = api_file.read_text().strip()
                if api and _answers(api):
                    return api
            if time.monotonic() - started > self.startup_timeout:
                raise IpfsDaemonError(
                    f"the JS IPFS daemon did not answer within {self.startup_timeout:g} s; "
                    f"its output:\n{self.log[-2000:]}"
                )
            time.sleep(0.05)


def _answers(api: str) -> bool:
    parts = api.strip("/").split("/")
    try:
        reply = requests.post(f"http://{parts[1]}:{parts[3]}/api/v0/version", timeout=2)
    except (requests.RequestException, IndexError):
        return False
    return reply.ok


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
