"""Nodes that run unattended: a command with no one to answer a password prompt (no terminal,
output to a log file, a background job) fails at once with one line saying what to pass, and
never stops on a prompt."""

from __future__ import annotations

import os
import pty
import subprocess

from tests.cli.conftest import MARKET, Cli


def _without_password(cli: Cli) -> dict[str, str]:
    env = cli.env()
    del env["MARKET_PASSWORD"]
    return env


def test_a_node_with_its_log_in_a_file_never_prompts(embedded_cli: Cli, tmp_path) -> None:
    """`market node heavy ... 2> node0.log &` from a terminal: stdin is the terminal, stderr
    the log file. The prompt would go to the log and the shell would stop the job on it."""
    cli = embedded_cli
    cli.ok("wallet", "new", "node0")
    controller, terminal = pty.openpty()
    log = tmp_path / "node0.log"
    try:
        with log.open("w") as stderr:
            done = subprocess.run(
                [MARKET, "node", "heavy", "--account", "node0"],
                stdin=terminal, stdout=subprocess.DEVNULL, stderr=stderr,
                env=_without_password(cli), timeout=60,
            )  # fmt: skip
    finally:
        os.close(controller)
        os.close(terminal)
    text = log.read_text()
    assert done.returncode == 1, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "--password-file" in lines[0] and "MARKET_PASSWORD" in lines[0]
    assert "Password for" not in text


def test_a_background_job_on_a_terminal_never_prompts(embedded_cli: Cli) -> None:
    """Both streams on a terminal, but not the terminal's foreground job."""
    cli = embedded_cli
    cli.ok("wallet", "new", "p0")
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [MARKET, "node", "light", "--once", "--account", "p0"],
            stdin=terminal, stdout=terminal, stderr=terminal, env=_without_password(cli),
            timeout=60, start_new_session=True,
        )  # fmt: skip
        output = os.read(controller, 65536).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 1, output
    assert "--password-file" in output and "MARKET_PASSWORD" in output
    assert "Password for" not in output


def test_a_password_file_serves_where_no_prompt_can(embedded_cli: Cli, tmp_path) -> None:
    cli = embedded_cli
    cli.ok("wallet", "new", "p0")
    secret = tmp_path / "password"
    secret.write_text(cli.env()["MARKET_PASSWORD"] + "\n")
    done = subprocess.run(
        [MARKET, "node", "light", "--once", "--account", "p0", "--password-file", str(secret)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=_without_password(cli),
        timeout=120,
    )  # fmt: skip
    # Unlocked: it gets as far as finding no staked dataset to serve.
    assert done.returncode == 1 and "no staked dataset" in done.stderr, done.stderr
