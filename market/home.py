"""Where the `market` command keeps its files: `$MARKET_HOME`, by default `~/.market`.

accounts/<alias>.json      keystores (Web3 Secret Storage v3, one per alias, as ape does)
networks/<name>.json       where the market is deployed on each network
embedded/chain.db          the embedded chain's state, kept between commands
devnet/                    the devnet started by `market devnet up`: its record and log
datasets/<id>/             registered datasets: schema, mock data, local path
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOME_ENV = "MARKET_HOME"


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def default(cls) -> Home:
        return cls(Path(os.environ.get(HOME_ENV) or Path.home() / ".market").expanduser())

    def dir(self, *parts: str) -> Path:
        """`root/parts...`, created (mode 0700) if missing."""
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    @property
    def accounts(self) -> Path:
        return self.dir("accounts")

    @property
    def networks(self) -> Path:
        return self.dir("networks")

    @property
    def embedded_state(self) -> Path:
        return self.dir("embedded") / "chain.db"

    @property
    def devnet(self) -> Path:
        return self.dir("devnet")

    @property
    def datasets(self) -> Path:
        return self.dir("datasets")


def write_json(path: Path, value: Any, mode: int = 0o600) -> None:
    """Write `value` as JSON atomically: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
