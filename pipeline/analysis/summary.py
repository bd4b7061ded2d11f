"""Summary statistics shared by the analysis stages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def describe(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Mean, median and 90th percentile of ``values`` (NaN for an empty set), as plain floats."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "p90": float("nan")}
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p90": float(np.percentile(a, 90))}
