"""`market demo --audit`: the platform audit's report, secure figures beside plaintext ones."""

from __future__ import annotations

from dataclasses import asdict

from rich.table import Table

from market.chain import Chain
from market.chain.units import format_tokens
from market.cli.common import emit_json, err, out

SHOWN = 10
"""Items listed in the ratio table (the most exposed in the plaintext union); --json has all."""


def audit_demo(providers: int, seed: int | None, as_json: bool) -> None:
    """Run `market.demos.audit` on the embedded chain and print its report."""
    from market.demos.audit import run_audit_demo

    with err.status("starting") as status, Chain.embedded() as chain:
        report = run_audit_demo(chain, providers, seed, progress=lambda s: status.update(s))
    if as_json:
        emit_json({**asdict(report), "state": report.state.name})
        return
    rows = sum(report.impressions.values())
    out.print(
        f"[bold]Job {report.job_id}[/]: exposure audit of {report.providers} platforms' "
        f"impression logs ({rows:,} impressions, {len(report.items)} items), "
        f"state [bold]{report.state.name}[/]"
    )
    out.print(
        f"  DP: epsilon {report.epsilon:g} ({report.mechanism}), noise scale "
        f"{report.noise_scale:g} per count from each of {report.noise_shares} heavy nodes; the "
        f"noise moves the Gini and the top-10% share by at most {report.error_bound:.4f} "
        "(probability 1 - 1e-9)",
        highlight=False,
    )
    gini_s, gini_p = report.secure["gini"]["gini"], report.plain["gini"]["gini"]
    top_s, top_p = report.secure["top_share"], report.plain["top_share"]
    figures = Table(title="Concentration (secure: from the released DP counts)")
    for column in ("figure", "secure", "plaintext union", "difference"):
        figures.add_column(column, justify="left" if column == "figure" else "right")
    figures.add_row("Gini", f"{gini_s:.4f}", f"{gini_p:.4f}", f"{gini_s - gini_p:+.4f}")
    figures.add_row(
        f"top-{top_s['percent']:g}% share ({top_s['groups']} items)",
        f"{top_s['share']:.4f}", f"{top_p['share']:.4f}", f"{top_s['share'] - top_p['share']:+.4f}",
    )  # fmt: skip
    out.print(figures)
    ratios = Table(title=f"Exposure share / catalogue share (the {SHOWN} most exposed items)")
    for column in ("item", "count (secure)", "count (plain)", "ratio (secure)", "ratio (plain)"):
        ratios.add_column(column, justify="left" if column == "item" else "right")
    secure, plain = report.secure["baseline_ratio"]["ratios"], report.plain["baseline_ratio"]
    order = sorted(range(len(report.items)), key=lambda i: -report.plain_counts[i])
    for i in order[:SHOWN]:
        item = report.items[i]
        ratios.add_row(
            item, f"{report.secure_counts[i]:,.0f}", f"{report.plain_counts[i]:,}",
            f"{secure[item]:.3f}", f"{plain['ratios'][item]:.3f}",
        )  # fmt: skip
    out.print(ratios)
    fees = ", ".join(format_tokens(f) for f in report.fee_per_node.values())
    out.print(f"  heavy node fees {fees}; buyer refund {format_tokens(report.refund)}")
