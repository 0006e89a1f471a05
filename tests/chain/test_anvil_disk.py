"""Anvil writes nothing to disk: by default it spills old blocks' states into
$HOME/.foundry/anvil/tmp/ and leaves them there when stopped (3.2 GB a test run, which filled
CI's disk). Both ways the project starts Anvil (the tests' and benchmarks' backend, and
`market devnet up`) keep a bounded history in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from market.chain import Chain
from market.home import Home
from market.network import devnet_down, devnet_up

pytestmark = pytest.mark.anvil

BLOCKS = 600  # by default Anvil has spilled 200 blocks' states to disk by then


def _mine(chain: Chain, blocks: int) -> None:
    chain.web3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]


def _files(home: Path) -> list[Path]:
    return [p for p in (home / ".foundry").rglob("*") if p.is_file()]


def test_the_anvil_backend_leaves_no_state_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with Chain.anvil() as chain:
        _mine(chain, BLOCKS)
        assert chain.web3.eth.block_number >= BLOCKS
        latest = chain.web3.eth.get_balance(chain.web3.eth.accounts[0], "latest")
        assert chain.web3.eth.get_balance(chain.web3.eth.accounts[0], BLOCKS - 200) == latest
    assert _files(tmp_path) == []


def test_a_devnet_leaves_no_state_files(tmp_path: Path, monkeypatch) -> None:
    from tests.cli.conftest import free_port

    monkeypatch.setenv("HOME", str(tmp_path))
    home = Home(tmp_path / "market")
    status = devnet_up(home, port=free_port())
    try:
        with Chain.rpc(status.url) as chain:
            _mine(chain, BLOCKS)
        assert _files(tmp_path) == []
    finally:
        devnet_down(home)
    assert _files(tmp_path) == []
