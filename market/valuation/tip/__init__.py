"""The Trustworthy Influence Protocol (TIP) core: what a provider's data is worth to a buyer's
model, measured on encrypted data influence, and the money that follows.

- `he`: the HE backends (`TenSealCKKS`, `PlainBackend`) behind one interface, and `CKKSParams`;
- `influence`: NumPy models, seeded projection, the buyer's query q and the providers' scores;
- `data`: scikit-learn's bundled digits and breast-cancer sets, split among providers of
  different quality;
- `job`: the TIP terms a valuation job states;
- `fidelity`: `run_valuation_bench`, `format_valuation_table` and `valuation_figure`;
- `settle`: provider scores to payouts and slashes through `market.valuation.payouts`.

Pure: nothing here touches a chain, the disk (except the figure's file) or the network.
Scores are positive when an example is predicted to *reduce* the buyer's evaluation loss.
Importing this package does not import TenSEAL, scikit-learn or matplotlib; the functions that
need them do.
"""

from market.valuation.tip.errors import (
    GradientRangeError,
    InvalidParamsError,
    MalformedPayloadError,
    SecretKeyMissingError,
    TipError,
)
from market.valuation.tip.he import (
    BACKENDS,
    BuyerContext,
    CKKSParams,
    HEBackend,
    PlainBackend,
    PublicContext,
    TenSealCKKS,
    compare_packings,
    load_buyer,
)
from market.valuation.tip.influence import (
    MLP,
    Projection,
    Query,
    SoftmaxRegression,
    TrainConfig,
    build_query,
    influence_scores,
    model_from_spec,
    projected_gradients,
    retrain_effect,
    train,
)
from market.valuation.tip.job import TipTerms
from market.valuation.tip.settle import TipSettlement, settle_valuation, severity_from_scores

__all__ = [
    "BACKENDS",
    "MLP",
    "BuyerContext",
    "CKKSParams",
    "GradientRangeError",
    "HEBackend",
    "InvalidParamsError",
    "MalformedPayloadError",
    "PlainBackend",
    "Projection",
    "PublicContext",
    "Query",
    "SecretKeyMissingError",
    "SoftmaxRegression",
    "TenSealCKKS",
    "TipError",
    "TipSettlement",
    "TipTerms",
    "TrainConfig",
    "build_query",
    "compare_packings",
    "influence_scores",
    "load_buyer",
    "model_from_spec",
    "projected_gradients",
    "retrain_effect",
    "settle_valuation",
    "severity_from_scores",
    "train",
]
