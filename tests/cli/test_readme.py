"""The README's devnet walkthrough, run as written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import free_port

ROOT = Path(__file__).parents[2]


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- walkthrough -->\n```sh\n(.*?)```", text, re.S)
    assert match, "README lost its walkthrough block"
    return match.group(1)


IDLE = 65
"""Seconds a person pauses before posting the bounty: longer than its `--deadline 60s`, so an
idle chain's latest block is older than the deadline is long."""


@pytest.mark.anvil
@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path: Path):
    """As a person runs it: real keystores (the default scrypt cost), the passphrase only in the
    README's own file (no $MARKET_PASSWORD anywhere), the heavy nodes in the background logging
    to files, and a pause on an idle chain before the bounty is posted."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MARKET_HOME": str(tmp_path / "market"),
        "MARKET_DEVNET_PORT": str(free_port()),
    }
    steps = walkthrough().replace('export PATH="$PWD/.venv/bin:$PATH"', "")
    post = steps.index("market bounty post")
    steps = steps[:post] + f"sleep {IDLE}  # a person reads, thinks, has a coffee\n" + steps[post:]
    # The README's heavy-node ports, free ones here (another test may hold those).
    assert steps.count("http://127.0.0.1:1854$i") == 1
    steps = steps.replace("http://127.0.0.1:1854$i", "http://127.0.0.1:${PORTS[$i]}")
    ports = " ".join(str(free_port()) for _ in range(3))
    script = f"set -euo pipefail\ncd {tmp_path}\nPORTS=({ports})\n" + steps
    # Its own process group: a walkthrough that fails midway leaves no node running.
    shell = subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = shell.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGTERM)
        shell.wait(timeout=60)
        subprocess.run(
            [str(Path(sys.executable).with_name("market")), "devnet", "down"], env=env, timeout=60
        )
    proc = subprocess.CompletedProcess(shell.args, shell.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "posted job 1" in proc.stdout
    assert "job 1: finalized" in proc.stdout
    assert proc.stdout.count("claimed ") == 3
    for keystore in (tmp_path / "market" / "accounts").glob("*.json"):
        assert json.loads(keystore.read_text())["crypto"]["kdfparams"]["n"] == 2**18
    for i in range(3):
        log = (tmp_path / f"node{i}.log").read_text()
        assert "Traceback" not in log and "Password" not in log, log
        for line in ("job 1: posted", "job 1: accepted", "job 1: submissions closed",
                     "job 1: the committee agreed"):  # fmt: skip
            assert line in log, log
        assert log.count("job 1: share from dataset") == 3, log
