"""The demos, one per kind of job (`DEMOS`), and the platform audit (`market.demos.audit`).

A demo runs one bounty end to end and returns a report; `format_report` turns it into what
`market demo --kind NAME` prints (lines and rich tables). Entries name their functions by
module, imported when the demo runs, so `market --help` imports none of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class Demo:
    """One kind's demo: `run(chain, seed, progress, **options)` on the embedded chain (or
    `devnet(seed, progress, **options)` with every node a process) and `report(report)`, the
    lines and tables it prints; `options` are the `market demo` options it takes."""

    about: str
    run: str
    report: str
    options: tuple[str, ...] = ()
    devnet: str | None = None

    def function(self, which: str) -> Callable[..., Any]:
        module, name = getattr(self, which).split(":")
        return getattr(import_module(module), name)


DEMOS: dict[str, Demo] = {
    "aggregate": Demo(
        "clinics' mean blood pressure",
        "market.demos.statistics:run_demo",
        "market.demos.statistics:format_report",
        options=("providers",),
        devnet="market.demos.devnet:run_devnet_demo",
    ),
    "ensemble": Demo(
        "model holders' secure weighted ensemble",
        "market.demos.ensemble:run_ensemble_demo",
        "market.demos.ensemble:format_report",
        options=("models",),
    ),
    "forecast": Demo(
        "a forecast tournament: skilled, random and adversarial holders scored under sharing, "
        "paid or slashed",
        "market.demos.forecast:run_forecast_demo",
        "market.demos.forecast:format_report",
        options=("targets",),
    ),
}
"""Every kind's demo, by kind name (`market demo --kind` lists them in this order)."""
