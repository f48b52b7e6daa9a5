"""Small helpers over the engine's tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def row_ids(names: Sequence[str] | pd.Series, wanted: Sequence[str] | pd.Series) -> np.ndarray:
    """Position of each ``wanted`` name in ``names`` (files are unique there); -1 where absent."""
    return pd.Index(names).get_indexer(list(wanted))
