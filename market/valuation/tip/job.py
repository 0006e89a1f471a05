"""What a valuation job states about TIP, as canonical JSON: the published model, the projection,
the curvature and damping of the query, the HE scheme and its parameters, the threat model and
the sign convention of the scores. Providers rebuild everything they need from this (plus the
model's parameters, the public context and `Enc(q)`, which are content-addressed blobs)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from market.valuation.tip.errors import InvalidParamsError
from market.valuation.tip.he import BACKENDS, CKKSParams, HEBackend, TenSealCKKS
from market.valuation.tip.influence import (
    CURVATURES,
    Model,
    Projection,
    TrainConfig,
    model_from_spec,
)

THREAT_MODEL = (
    "semi-honest: the buyer and the providers follow the protocol; the buyer learns only the "
    "per-example and per-provider scores, the providers learn nothing about q (CKKS, 128-bit)"
)
SIGN_CONVENTION = "positive score: adding the example is predicted to reduce the buyer's eval loss"


@dataclass(frozen=True)
class TipTerms:
    model: dict[str, Any]
    """`model.spec()`: kind and shape."""
    params_sha256: str
    """SHA-256 of the published float64 parameters (little-endian bytes)."""
    train: dict[str, Any]
    projection_seed: int
    k: int
    damping: float
    curvature: str = "gauss-newton"
    backend: str = "tenseal-ckks"
    ckks: CKKSParams | None = CKKSParams()
    threat_model: str = THREAT_MODEL
    sign_convention: str = SIGN_CONVENTION

    def __post_init__(self) -> None:
        if self.curvature not in CURVATURES:
            raise InvalidParamsError(f"curvature must be one of {CURVATURES}")
        if self.backend not in BACKENDS:
            raise InvalidParamsError(f"backend must be one of {sorted(BACKENDS)}")
        if self.backend == "tenseal-ckks" and self.ckks is None:
            raise InvalidParamsError("a tenseal-ckks job must state its CKKS parameters")

    @classmethod
    def for_model(
        cls,
        model: Model,
        theta: np.ndarray,
        config: TrainConfig,
        *,
        projection_seed: int,
        k: int,
        damping: float | None = None,
        curvature: str = "gauss-newton",
        backend: HEBackend | None = None,
    ) -> TipTerms:
        backend = backend or TenSealCKKS()
        return cls(
            model=model.spec(),
            params_sha256=params_digest(theta),
            train=config.to_json(),
            projection_seed=projection_seed,
            k=k,
            damping=config.weight_decay if damping is None else damping,
            curvature=curvature,
            backend=backend.name,
            ckks=getattr(backend, "params", None),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "params_sha256": self.params_sha256,
            "train": self.train,
            "projection": {"seed": self.projection_seed, "k": self.k},
            "damping": self.damping,
            "curvature": self.curvature,
            "backend": self.backend,
            "ckks": self.ckks.to_json() if self.ckks else None,
            "threat_model": self.threat_model,
            "sign_convention": self.sign_convention,
        }

    def canonical(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TipTerms:
        try:
            return cls(
                model=dict(data["model"]),
                params_sha256=str(data["params_sha256"]),
                train=dict(data["train"]),
                projection_seed=int(data["projection"]["seed"]),
                k=int(data["projection"]["k"]),
                damping=float(data["damping"]),
                curvature=str(data["curvature"]),
                backend=str(data["backend"]),
                ckks=CKKSParams.from_json(data["ckks"]) if data.get("ckks") else None,
                threat_model=str(data.get("threat_model", THREAT_MODEL)),
                sign_convention=str(data.get("sign_convention", SIGN_CONVENTION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidParamsError):
                raise
            raise InvalidParamsError(f"not TIP terms: {exc}") from exc

    def rebuild(self, theta: np.ndarray) -> tuple[Model, Projection, HEBackend]:
        """What a provider needs: the model (after checking the parameters against the digest),
        the projection, and the HE backend."""
        if params_digest(theta) != self.params_sha256:
            raise InvalidParamsError("the model parameters do not match the job's digest")
        model = model_from_spec(self.model)
        backend: HEBackend
        if self.backend == "tenseal-ckks":
            backend = TenSealCKKS(self.ckks or CKKSParams())
        else:
            backend = BACKENDS[self.backend]()
        return model, Projection(self.projection_seed, self.k, model.n_params), backend


def params_digest(theta: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(theta, dtype="<f8").tobytes()).hexdigest()
