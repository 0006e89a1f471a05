"""Hypothesis strategies shared by the compute tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from compute import field
from compute.sharing import AdditiveScheme, Scheme, ShamirScheme

additive_schemes = st.integers(min_value=2, max_value=6).map(AdditiveScheme)
"""Additive n-of-n schemes."""


@st.composite
def shamir_schemes(draw: st.DrawFn, min_redundancy: int = 0) -> ShamirScheme:
    """Shamir t-of-n schemes with at least `min_redundancy` holders beyond the threshold."""
    t = draw(st.integers(min_value=1, max_value=4))
    n = draw(st.integers(min_value=t + min_redundancy, max_value=t + min_redundancy + 3))
    return ShamirScheme(n, t)


schemes: st.SearchStrategy[Scheme] = st.one_of(additive_schemes, shamir_schemes())
"""Every scheme, with varied holders and thresholds."""

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
"""Array shapes, including scalars and empty arrays."""


def secrets_for(scheme: Scheme, shape: tuple[int, ...]) -> st.SearchStrategy[NDArray[np.int64]]:
    """Signed int64 arrays whose values the scheme can hold, extremes included."""
    bound = field.CAPACITY if isinstance(scheme, ShamirScheme) else 2**63 - 1
    low = -bound if isinstance(scheme, ShamirScheme) else -(2**63)
    elements = st.one_of(
        st.integers(min_value=low, max_value=bound),
        st.sampled_from([low, -1, 0, 1, bound]),
    )
    return hnp.arrays(np.int64, shape, elements=elements)


seeds = st.integers(min_value=0, max_value=2**32 - 1)
"""Seeds for the NumPy generators that stand in for the CSPRNG in tests."""
