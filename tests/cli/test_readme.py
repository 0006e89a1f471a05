"""The README's devnet walkthrough, run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import PASSWORD, free_port

ROOT = Path(__file__).parents[2]


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- walkthrough -->\n```sh\n(.*?)```", text, re.S)
    assert match, "README lost its walkthrough block"
    return match.group(1)


@pytest.mark.anvil
def test_readme_walkthrough_runs_as_written(tmp_path: Path):
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MARKET_HOME": str(tmp_path / "market"),
        "MARKET_PASSWORD": PASSWORD,
        "MARKET_KEYSTORE_SCRYPT_N": "1024",
        "MARKET_DEVNET_PORT": str(free_port()),
    }
    script = f"set -euo pipefail\ncd {tmp_path}\n" + walkthrough().replace(
        'export PATH="$PWD/.venv/bin:$PATH"', ""
    )
    try:
        proc = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        subprocess.run(
            [str(Path(sys.executable).with_name("market")), "devnet", "down"], env=env, timeout=60
        )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "posted job 1" in proc.stdout
    assert "job 1: finalized" in proc.stdout
    assert proc.stdout.count("claimed ") == 3
