"""The contract tests' market: `market.sandbox.Sandbox` under its test name."""

from market.sandbox import Sandbox as World

__all__ = ["World"]
