"""ape on this project: `ape compile` through tools/solc (npm solc-js) reproduces the committed
artifacts, `scripts/deploy.py` deploys both through `ape run` and through the market package, and
ape-config.yaml, package.json and contracts/compiler.json pin the same toolchain.

The ape runs happen in a copy of the project with their own py-solc-x folder and ape data folder,
so they touch neither ~/.solcx, ~/.ape nor this checkout's .build/, and need no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.version import Version

from market.chain import Chain, Deployment, MarketConfig
from market.chain.artifacts import ARTIFACT_NAMES, load_artifact

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
APE = VENV_BIN / "ape"
SOLC = ROOT / "tools" / "solc"
COMPILER = json.loads((ROOT / "contracts" / "compiler.json").read_text())
APE_CONFIG = yaml.safe_load((ROOT / "ape-config.yaml").read_text())
PACKAGE = json.loads((ROOT / "package.json").read_text())
HAVE_NODE_MODULES = (ROOT / "node_modules" / "solc").is_dir() and shutil.which("node") is not None
ANVIL_BIN_DIR = ROOT / "node_modules" / ".bin"

needs_ape = pytest.mark.skipif(
    not APE.exists() or not HAVE_NODE_MODULES,
    reason="needs the `ape` extra (.venv/bin/ape) and node_modules (make install)",
)


# ----------------------------------------------------------------------------- pinned versions
def test_ape_config_matches_compiler_json() -> None:
    solidity = APE_CONFIG["solidity"]
    assert str(solidity["version"]) == COMPILER["solc"]
    assert solidity["evm_version"] == COMPILER["evmVersion"]
    assert solidity["optimize"] is COMPILER["optimizer"]["enabled"]
    assert solidity["optimization_runs"] == COMPILER["optimizer"]["runs"]
    assert solidity["via_ir"] is COMPILER["viaIR"]
    assert APE_CONFIG["foundry"]["evm_version"] == COMPILER["evmVersion"]
    assert APE_CONFIG["contracts_folder"] == "contracts"


def test_package_json_matches_compiler_json_and_ape_config() -> None:
    deps = PACKAGE["dependencies"]
    assert deps["solc"] == COMPILER["solc"]
    (oz,) = [d for d in APE_CONFIG["dependencies"] if d["npm"] == "@openzeppelin/contracts"]
    assert str(oz["version"]) == deps["@openzeppelin/contracts"]
    remapping = dict(r.split("=", 1) for r in APE_CONFIG["solidity"]["import_remapping"])
    assert remapping["@openzeppelin/contracts"] == f"{oz['name']}/{oz['version']}"


def test_ape_and_the_project_share_one_web3() -> None:
    """ape 0.8 needs web3 < 8; the project is on web3 7.x, so both live in one environment."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    try:
        for dist in ("eth-ape", "ape-foundry"):
            wanted += [Requirement(r) for r in requires(dist) or []]
        installed = Version(version("web3"))
    except PackageNotFoundError:
        pytest.skip("the `ape` extra is not installed")
    web3 = [r for r in wanted if r.name == "web3"]
    assert len(web3) == 3
    for requirement in web3:
        assert requirement.specifier.contains(installed, prereleases=True), requirement


def test_artifacts_were_built_with_compiler_json() -> None:
    for name in ARTIFACT_NAMES:
        compiler = load_artifact(name).compiler
        assert compiler["solc"].startswith(COMPILER["solc"] + "+")
        assert compiler["settings"]["evmVersion"] == COMPILER["evmVersion"]
        assert compiler["settings"]["optimizer"] == COMPILER["optimizer"]
        assert compiler["settings"]["viaIR"] is COMPILER["viaIR"]


# ----------------------------------------------------------------------------- tools/solc
@pytest.mark.skipif(not HAVE_NODE_MODULES, reason="needs node_modules (npm ci)")
def test_tools_solc_answers_like_solc_for_py_solc_x(tmp_path: Path) -> None:
    pytest.importorskip("solcx", reason="py-solc-x comes with the `ape` extra")
    from solcx import compile_standard
    from solcx.exceptions import UnknownOption
    from solcx.wrapper import get_solc_version, solc_wrapper

    version = get_solc_version(SOLC, with_commit_hash=True)
    assert version.base_version == COMPILER["solc"]
    assert str(version).startswith(COMPILER["solc"] + "+commit.")

    source = 'pragma solidity 0.8.28;\nimport "@openzeppelin/contracts/utils/Nonces.sol";\n'
    source += "contract N is Nonces { function f() external returns (uint256) { return _useNonce(msg.sender); } }\n"  # noqa: E501
    out = compile_standard(
        {
            "language": "Solidity",
            "sources": {"N.sol": {"content": source}},
            "settings": {"outputSelection": {"*": {"*": ["abi"]}}},
        },
        base_path=tmp_path,
        solc_binary=SOLC,
    )
    assert [f["name"] for f in out["contracts"]["N.sol"]["N"]["abi"] if f["type"] == "function"]
    with pytest.raises(UnknownOption):
        solc_wrapper(solc_binary=SOLC, stdin="", combined_json="abi")


@pytest.mark.skipif(not HAVE_NODE_MODULES, reason="needs node_modules (npm ci)")
def test_ape_solc_registers_the_wrapper_and_keeps_a_native_solc(tmp_path: Path) -> None:
    pytest.importorskip("solcx", reason="py-solc-x comes with the `ape` extra")
    from solcx import get_installed_solc_versions
    from solcx.install import get_executable

    folder = tmp_path / "solcx"
    register = [sys.executable, str(ROOT / "tools" / "ape_solc.py"), "--dir", str(folder)]
    subprocess.run(register, check=True, capture_output=True)
    subprocess.run(register, check=True, capture_output=True)  # idempotent
    assert get_installed_solc_versions(folder) == [Version(COMPILER["solc"])]
    link = get_executable(COMPILER["solc"], folder)
    assert link.is_symlink() and link.resolve() == SOLC

    link.unlink()
    link.write_text("a native solc")
    subprocess.run(register, check=True, capture_output=True)
    assert not link.is_symlink() and link.read_text() == "a native solc"


# ----------------------------------------------------------------------------- ape
def _ape_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"APE_DEPLOYER", "ETH_RPC_URL"}}
    env.update(
        SOLCX_BINARY_PATH=str(tmp / "solcx"),
        APE_DATA_FOLDER=str(tmp / "ape-data"),
        PATH=os.pathsep.join([str(ANVIL_BIN_DIR), str(VENV_BIN), env.get("PATH", "")]),
    )
    return env


def _ape(project: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(APE), *args],
        cwd=project,
        env=_ape_env(project.parent),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"ape {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def ape_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the project (sources, config, scripts) after `ape compile`."""
    tmp = tmp_path_factory.mktemp("ape")
    project = tmp / "data-market"
    project.mkdir()
    shutil.copytree(ROOT / "contracts", project / "contracts")
    shutil.copytree(ROOT / "scripts", project / "scripts", ignore=shutil.ignore_patterns("__py*"))
    shutil.copy(ROOT / "ape-config.yaml", project)
    shutil.copy(ROOT / "package.json", project)
    (project / "node_modules").symlink_to(ROOT / "node_modules")
    # What `make install` does for ~/.solcx, here into this test's own folder.
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "ape_solc.py"), "--dir", str(tmp / "solcx")],
        check=True,
        capture_output=True,
    )
    _ape(project, "compile")
    yield project


def _manifest(project: Path) -> dict[str, Any]:
    return json.loads((project / ".build" / "__local__.json").read_text())


def _strip_metadata(code: bytes) -> tuple[bytes, bytes]:
    """Splits off the CBOR metadata solc appends (its length is the last two bytes)."""
    size = int.from_bytes(code[-2:], "big") + 2
    return code[:-size], code[-size:]


@needs_ape
def test_ape_compile_reproduces_the_committed_artifacts(ape_project: Path) -> None:
    manifest = _manifest(ape_project)
    types = manifest["contractTypes"]
    assert set(ARTIFACT_NAMES) <= set(types)
    for name in ARTIFACT_NAMES:
        ours, apes = load_artifact(name), types[name]
        assert apes["abi"] == ours.abi, name

        # Same machine code; only the metadata trailer differs: the build script sets
        # `metadata.bytecodeHash: none`, which ape-solidity cannot, so ape's adds an IPFS hash.
        ape_runtime = bytes.fromhex(apes["runtimeBytecode"]["bytecode"][2:])
        our_runtime = bytes.fromhex(ours.deployed_bytecode[2:])
        ape_code, ape_meta = _strip_metadata(ape_runtime)
        our_code, our_meta = _strip_metadata(our_runtime)
        assert ape_code == our_code, name
        solc = b"dsolcC" + bytes(int(part) for part in COMPILER["solc"].split("."))
        assert ape_meta[:-2].endswith(solc) and our_meta[:-2].endswith(solc)
        assert b"ipfs" in ape_meta and b"ipfs" not in our_meta

        # The creation code is constructor + runtime; its constants for the runtime's and the
        # whole code's length are the only other bytes the longer trailer changes.
        ape_init = bytes.fromhex(apes["deploymentBytecode"]["bytecode"][2:])
        our_init = bytes.fromhex(ours.bytecode[2:])
        assert ape_init.endswith(ape_runtime) and our_init.endswith(our_runtime)
        ape_ctor = ape_init[: -len(ape_runtime)]
        our_ctor = our_init[: -len(our_runtime)]
        lengths = ((len(ape_init), len(our_init)), (len(ape_runtime), len(our_runtime)))
        for ape_len, our_len in lengths:
            ape_ctor = ape_ctor.replace(ape_len.to_bytes(2, "big"), our_len.to_bytes(2, "big"))
        assert ape_ctor == our_ctor, name

    (compiler,) = manifest["compilers"]
    assert compiler["name"] == "solidity"
    assert Version(compiler["version"]).base_version == COMPILER["solc"]
    assert compiler["settings"]["evmVersion"] == COMPILER["evmVersion"]
    assert compiler["settings"]["optimizer"] == COMPILER["optimizer"]
    assert compiler["settings"].get("viaIR", False) is COMPILER["viaIR"]


def _deployment_from(stdout: str) -> Deployment:
    """The deployment JSON the script prints between ape's log lines."""
    start = stdout.index("{\n")
    return Deployment.from_json(stdout[start : stdout.index("\n}\n", start) + 2])


@needs_ape
def test_ape_run_deploy_on_the_local_test_network(ape_project: Path) -> None:
    result = _ape(ape_project, "run", "deploy", "--network", "ethereum:local:test")
    deployment = _deployment_from(result.stdout)
    assert deployment.chain_id == 1337
    assert deployment.config == MarketConfig()
    assert len({deployment.token, deployment.marketplace, deployment.deployer}) == 3
    assert "Contract 'Marketplace' deployed to" in result.stdout + result.stderr


@needs_ape
@pytest.mark.anvil
def test_ape_run_deploy_on_foundry_anvil(
    ape_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ape-foundry connects to the Anvil that APE_FOUNDRY_HOST names. Left to start its own, it
    # gives Anvil a fixed 20 s to answer, which a loaded 2-core CI machine once exceeded.
    with Chain.anvil(startup_timeout=120) as chain:
        monkeypatch.setenv("APE_FOUNDRY_HOST", chain.backend.url)
        result = _ape(ape_project, "run", "deploy", "--network", "ethereum:local:foundry")
        deployment = _deployment_from(result.stdout)
        assert deployment.chain_id == 31337
        assert deployment.token != deployment.marketplace
        assert chain.web3.eth.get_code(deployment.marketplace)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- python path
def _check_deployed(chain: Chain, deployment: Deployment) -> None:
    assert deployment.chain_id == chain.chain_id
    assert deployment.config == MarketConfig()
    for name, address in (("DataToken", deployment.token), ("Marketplace", deployment.marketplace)):
        # Same length as the artifact (EIP-712 immutables are filled in at deployment).
        code = chain.web3.eth.get_code(address)  # type: ignore[arg-type]
        assert len(code) == len(load_artifact(name).deployed_bytecode) // 2 - 1, name
    token = chain.contract("DataToken", deployment.token)
    assert chain.call(token.functions.balanceOf(deployment.deployer)) == 10**9 * 10**18
    assert chain.call(token.functions.faucetEnabled())


def test_script_deploys_through_the_market_package(
    embedded_chain: Chain, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scripts import deploy

    monkeypatch.delenv("ETH_RPC_URL", raising=False)
    monkeypatch.delenv("MARKET_DEPLOYER_KEY", raising=False)
    monkeypatch.setattr(Chain, "embedded", classmethod(lambda cls: embedded_chain))
    deploy.run([])
    _check_deployed(embedded_chain, Deployment.from_json(capsys.readouterr().out))


@pytest.mark.anvil
def test_script_deploys_to_an_rpc_url(
    anvil_chain: Chain, capsys: pytest.CaptureFixture[str]
) -> None:
    from scripts import deploy

    deploy.run(["--rpc-url", anvil_chain.backend.url])  # type: ignore[attr-defined]
    _check_deployed(anvil_chain, Deployment.from_json(capsys.readouterr().out))


@pytest.mark.parametrize("how", [["scripts/deploy.py"], ["-m", "scripts.deploy"]])
def test_script_runs_as_a_program(how: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"ETH_RPC_URL", "MARKET_DEPLOYER_KEY"}}
    result = subprocess.run(
        [sys.executable, *how], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    deployment = Deployment.from_json(result.stdout)
    assert deployment.config == MarketConfig() and deployment.block >= 2
