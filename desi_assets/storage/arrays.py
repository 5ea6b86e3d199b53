"""Numpy <-> Arrow list-column conversion (the one place spectra become table cells)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa


def to_list_array(values: np.ndarray) -> pa.ListArray:
    """(N, M) numpy array -> Arrow list array of N rows of M values, no per-row Python work."""
    values = np.ascontiguousarray(values)
    n, m = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * m, m, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def to_numpy_2d(column: pl.Series | pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """List column of equal-length rows -> (N, M) numpy array."""
    arr = column.to_arrow() if isinstance(column, pl.Series) else column
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=dtype)
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    if flat.size % n:
        raise ValueError("list column rows have unequal lengths")
    return flat.reshape(n, flat.size // n).astype(dtype, copy=False)
