"""Registers tools/solc (npm solc-js behind a `solc` command line) with py-solc-x, so that
ape-solidity compiles with it and never tries to download a compiler.

py-solc-x finds compilers as `<folder>/solc-v<version>`, the folder being `$SOLCX_BINARY_PATH` or
`~/.solcx`. This links `solc-v<version of contracts/compiler.json>` there to tools/solc:

    .venv/bin/python tools/ape_solc.py              # link into $SOLCX_BINARY_PATH or ~/.solcx
    .venv/bin/python tools/ape_solc.py --dir DIR    # link into DIR (then SOLCX_BINARY_PATH=DIR)

A compiler already installed there as a regular file (a native solc of that version, from
`solcx.install_solc`) is left alone: it compiles the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = ROOT / "tools" / "solc"


def pinned_version() -> str:
    return json.loads((ROOT / "contracts" / "compiler.json").read_text())["solc"]


def default_folder() -> Path:
    if os.environ.get("SOLCX_BINARY_PATH"):
        return Path(os.environ["SOLCX_BINARY_PATH"])
    return Path.home() / ".solcx"


def register(folder: Path) -> Path:
    """Links `folder/solc-v<pinned>` to tools/solc; returns the link (or the native binary)."""
    version = pinned_version()
    reported = subprocess.run(
        [str(WRAPPER), "--version"], capture_output=True, text=True, check=False
    )
    if reported.returncode != 0 or f"Version: {version}+" not in reported.stdout:
        raise SystemExit(
            f"tools/solc does not answer as solc {version}: "
            f"{(reported.stdout + reported.stderr).strip()} (run `make install`)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"solc-v{version}"
    if target.exists() and not target.is_symlink():
        return target  # a native solc of the pinned version: as good
    tmp = folder / f".solc-v{version}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(WRAPPER)
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="py-solc-x compiler folder")
    args = parser.parse_args(argv)
    target = register(args.dir or default_folder())
    kind = "-> tools/solc (solc-js)" if target.is_symlink() else "(native solc, kept)"
    print(f"{target} {kind}")


if __name__ == "__main__":
    main(sys.argv[1:])
