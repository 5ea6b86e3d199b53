"""Row-block processing: results joined in order, dataclasses field by field, empty input handled."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from desi_assets.science.batching import concat_rows, in_row_blocks


@dataclass
class _Inner:
    a: np.ndarray


@dataclass
class _Outer:
    inner: _Inner
    b: np.ndarray


def test_in_row_blocks_matches_one_pass_and_sees_every_row_once():
    x = np.arange(23.0)
    seen = []

    def fn(rows: slice) -> _Outer:
        seen.append((rows.start, rows.stop))
        return _Outer(_Inner(x[rows] * 2), x[rows] + 1)

    out = in_row_blocks(x.size, 5, fn)
    assert seen == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    np.testing.assert_array_equal(out.inner.a, x * 2)
    np.testing.assert_array_equal(out.b, x + 1)


def test_empty_input_gives_one_empty_block_and_one_part_is_returned_as_is():
    out = in_row_blocks(0, 4, lambda rows: np.zeros((rows.stop - rows.start, 3)))
    assert out.shape == (0, 3)
    part = np.ones((2, 2))
    assert concat_rows([part]) is part
