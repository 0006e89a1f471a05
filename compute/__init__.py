"""Private computation over data that never leaves its owners: the pure core.

- `compute.encoding`: fixed-point encoding with explicit bounds, clipping and headroom checks.
- `compute.field`, `compute.sharing`: additive sharing over Z_2^64 and Shamir over GF(2^61 - 1).
- `compute.randomness`: randomness is always passed in; `os_rng()` for production.
- `compute.reduce`: secure reduce operations over shares (sum, count, mean, variance,
  histogram, weighted sum), with an explicit `Abort` below the thresholds.
- `compute.messages`, `compute.round`: the aggregation round as sans-I/O state machines.
- `compute.dp`: differential privacy through OpenDP, with noise distributed over heavy nodes.
- `compute.simulation`: a whole round in one process.
- `compute.proposal`, `compute.policy`, `compute.maps`: what a buyer asks for (content-addressed),
  what a provider allows, and the vetted map functions run on a provider's table.
- `compute.economics`: the contract's fee arithmetic (fee, fee share, payout pool), once.
Every module here is pure (no I/O; `tests/compute/test_purity.py`). The light and heavy nodes
around the round (HTTP, SQLite, the chain) are the top-level package `nodes`; see docs/compute.md
and docs/nodes.md.
"""
