"""Differential privacy on reduce outputs, calibrated, sampled and accounted by OpenDP.

Unit of privacy: one record of one provider (neighbouring inputs differ by adding or removing
one record). Clipping to a field's bounds caps what one record adds to each coordinate of a
contribution (`Group.bound` in `compute.reduce`); those caps are the sensitivities.

Mechanism: with `delta == 0`, OpenDP's Laplace mechanism on integers (the discrete Laplace)
for pure epsilon-DP; with `delta > 0`, its Gaussian mechanism on integers (the discrete
Gaussian) analysed in zero-concentrated DP and converted to (epsilon, delta). The budget is
split evenly over the contribution's groups (a mean releases a sum and a count), each group's
noise scale is found by OpenDP's binary search against its privacy map, and the spent budget
is the sum over groups of what OpenDP's maps report (basic composition).

Distributed noise: no heavy node adds noise on the reconstructed aggregate, because every node
would then know the un-noised value. Instead every participating heavy node draws a full-budget
noise vector, secret-shares it with the committee's scheme and adds its shares to its partial,
so the aggregate is reconstructed with the sum of all their noise already in it. Each node's own
noise alone makes the release (epsilon, delta)-DP (the others' noise is post-processing). A
coalition of heavy nodes that the sharing scheme already protects against (fewer than `t` for
Shamir, fewer than `n` for additive) sees only shares, then the published result, and knows at
most its own noise; at least one other node's noise is in the result, so the release is still
(epsilon, delta)-DP against it; in particular no single heavy node ever sees the un-noised
aggregate. A coalition of `t` or more Shamir holders can reconstruct anything, inputs included;
DP does not change that. The price of distributing the noise: with k noise shares the variance is
k times what a trusted curator would add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import opendp.combinators as dp_c
import opendp.domains as dp_domains
import opendp.measurements as dp_m
import opendp.metrics as dp_metrics
import opendp.mod as dp_mod
from numpy.typing import NDArray

from compute.errors import PrivacyError
from compute.reduce import Group, Reduction

Mechanism = Literal["laplace", "gaussian"]

TAIL = 50
"""A noise sample exceeds `TAIL` scales with probability below e^-40 for both mechanisms; the
headroom check keeps that much room per noise share."""


@dataclass(frozen=True)
class PrivacyTerms:
    """What a proposal asks for: epsilon, and delta (0 for pure DP)."""

    epsilon: float
    delta: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise PrivacyError(f"epsilon must be positive and finite, got {self.epsilon!r}")
        if not (0.0 <= self.delta < 1.0):
            raise PrivacyError(f"delta must be in [0, 1), got {self.delta!r}")

    @property
    def mechanism(self) -> Mechanism:
        return "gaussian" if self.delta > 0 else "laplace"


@dataclass(frozen=True)
class GroupNoise:
    """The noise for one slice of the contribution, and what it costs."""

    name: str
    start: int
    stop: int
    sensitivity: float
    """L1 (Laplace) or L2 (Gaussian) sensitivity, in encoded units."""
    scale: float
    """OpenDP's noise scale (Laplace `b`; Gaussian standard deviation), in encoded units."""
    epsilon: float
    delta: float


@dataclass(frozen=True)
class PrivacySpent:
    """The privacy cost reported with a result."""

    epsilon: float
    delta: float
    mechanism: Mechanism
    noise_shares: int
    """How many heavy nodes' noise is in the result; each alone gives (epsilon, delta)."""
    unit: str = "one record of one provider"


@dataclass(frozen=True)
class NoisePlan:
    """Calibrated noise for one reduction: what each heavy node samples."""

    terms: PrivacyTerms
    length: int
    groups: tuple[GroupNoise, ...]

    @property
    def mechanism(self) -> Mechanism:
        return self.terms.mechanism

    def margin(self, noise_shares: int) -> int:
        """Headroom to keep for the noise of `noise_shares` heavy nodes, in encoded units."""
        return math.ceil(noise_shares * TAIL * max(g.scale for g in self.groups))

    def spent(self, noise_shares: int) -> PrivacySpent:
        """The cost of a release carrying `noise_shares` nodes' noise under this plan."""
        return PrivacySpent(
            epsilon=sum(g.epsilon for g in self.groups),
            delta=sum(g.delta for g in self.groups),
            mechanism=self.mechanism,
            noise_shares=noise_shares,
        )


def _space(mechanism: Mechanism) -> tuple[Any, Any]:
    # The modules, not `opendp.prelude`: the prelude also imports scikit-learn when it is
    # installed, a second of start-up for every command.
    dp_mod.enable_features("contrib")
    metric = (
        dp_metrics.l1_distance(T="f64")
        if mechanism == "laplace"
        else dp_metrics.l2_distance(T="f64")
    )
    return dp_domains.vector_domain(dp_domains.atom_domain(T="i64")), metric


def _measurement(mechanism: Mechanism, scale: float, delta: float) -> Any:
    domain, metric = _space(mechanism)
    if mechanism == "laplace":
        return dp_m.make_laplace(domain, metric, scale=scale)
    gaussian = dp_m.make_gaussian(domain, metric, scale=scale)
    return dp_c.make_fix_delta(dp_c.make_zCDP_to_approxDP(gaussian), delta=delta)


def _bounds(
    mechanism: Mechanism, sensitivity: float, epsilon: float, delta: float
) -> tuple[float, float]:
    """A bracket around the noise scale, so OpenDP's binary search starts close (its own
    bound inference can overflow or take tens of seconds for the Gaussian)."""
    if mechanism == "laplace":
        guess = sensitivity / epsilon  # exact for the discrete Laplace, up to rounding
        return guess / 2, guess * 2
    # rho = ((sqrt(log(1/delta) + eps) - sqrt(log(1/delta)))^2 is enough by the Bun-Steinke
    # conversion; OpenDP's conversion is tighter, so the scale it needs is a bit smaller.
    log_delta = math.log(1 / delta)
    rho = (math.sqrt(log_delta + epsilon) - math.sqrt(log_delta)) ** 2
    upper = sensitivity / math.sqrt(2 * rho)
    return upper / 8, upper * 1.01


def _calibrate(group: Group, terms: PrivacyTerms, share: int) -> GroupNoise:
    epsilon, delta = terms.epsilon / share, terms.delta / share
    mechanism = terms.mechanism
    sensitivity = float(group.l1) if mechanism == "laplace" else group.l2
    d_out: Any = epsilon if mechanism == "laplace" else (epsilon, delta)
    scale = dp_mod.binary_search_param(
        lambda s: _measurement(mechanism, s, delta),
        d_in=sensitivity,
        d_out=d_out,
        bounds=_bounds(mechanism, sensitivity, epsilon, delta),
    )
    loss = _measurement(mechanism, scale, delta).map(sensitivity)
    used_epsilon, used_delta = (loss, 0.0) if mechanism == "laplace" else loss
    return GroupNoise(
        group.name,
        group.start,
        group.stop,
        sensitivity,
        float(scale),
        float(used_epsilon),
        float(used_delta),
    )


def plan_noise(reduction: Reduction, terms: PrivacyTerms) -> NoisePlan:
    """Calibrate noise for `reduction` so that one heavy node's noise gives `terms`."""
    groups = reduction.groups()
    return NoisePlan(
        terms, reduction.length, tuple(_calibrate(g, terms, len(groups)) for g in groups)
    )


def sample_noise(plan: NoisePlan) -> NDArray[np.int64]:
    """One heavy node's noise vector, drawn by OpenDP's own CSPRNG (applying the calibrated
    measurement to zeros gives exactly its noise)."""
    noise = np.zeros(plan.length, dtype=np.int64)
    for group in plan.groups:
        measurement = _measurement(plan.mechanism, group.scale, group.delta)
        noise[group.start : group.stop] = measurement([0] * (group.stop - group.start))
    return noise
