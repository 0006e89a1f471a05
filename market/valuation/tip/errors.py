"""Errors raised by `market.valuation.tip`, under the package's root `ValuationError`."""

from __future__ import annotations

from market.valuation.errors import ValuationError


class TipError(ValuationError):
    """Root of every error raised by the Trustworthy Influence Protocol (TIP) core."""


class SecretKeyMissingError(TipError, PermissionError):
    """Decryption was asked of a public context: only the buyer's context holds the secret key."""


class MalformedPayloadError(TipError, ValueError):
    """A serialized context, query or score payload is not what this backend wrote, or belongs to
    another backend, another k, or another set of parameters."""


class InvalidParamsError(TipError, ValueError):
    """CKKS parameters, a projection or a query do not fit together (for example k larger than
    the slot count, or a modulus chain that is not 128-bit secure)."""


class GradientRangeError(TipError, ValueError):
    """Gradients are not finite, have the wrong width, or are too large for the CKKS headroom."""
