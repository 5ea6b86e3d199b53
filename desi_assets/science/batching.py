"""Row-block processing: apply a per-block function to (N, …) arrays and join the per-block results."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Callable, TypeVar

import numpy as np

T = TypeVar("T")


def concat_rows(parts: list[T]) -> T:
    """Concatenate per-block results along rows: arrays, or dataclasses of arrays (nested dataclasses too)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if is_dataclass(first):
        return type(first)(**{f.name: concat_rows([getattr(p, f.name) for p in parts]) for f in fields(first)})
    return np.concatenate(parts)


def in_row_blocks(n: int, size: int, fn: Callable[[slice], T]) -> T:
    """concat_rows of fn(rows) over consecutive row slices of at most `size` (one empty slice when n = 0)."""
    return concat_rows([fn(slice(s0, min(n, s0 + size))) for s0 in range(0, max(n, 1), size)])

