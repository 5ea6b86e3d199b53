"""Posterior calibration metrics (science.stellar_populations.coverage) on posteriors with a known answer."""

import numpy as np
import pytest

from desi_assets.science.stellar_populations import coverage as cov


def test_coverage_hand_computed_and_nan_rows_ignored():
    truth = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    lo = np.array([0.0, 0.0, 3.5, 3.0, 0.0])
    hi = np.array([2.0, 1.0, 4.0, 5.0, 9.0])
    assert cov.coverage(truth, lo, hi) == pytest.approx(0.5)  # rows 0 and 3 inside, the NaN row dropped
    assert np.isnan(cov.coverage([np.nan], [0.0], [1.0]))


def test_gaussian_posteriors_cover_68_percent_and_narrow_ones_do_not():
    rng = np.random.default_rng(0)
    n = 20000
    mu = rng.normal(10, 1, n)
    sigma = rng.uniform(0.05, 0.3, n)
    truth = mu + sigma * rng.standard_normal(n)  # truth drawn from each posterior: calibrated by construction
    c68 = cov.coverage(truth, mu - sigma, mu + sigma)
    c95 = cov.coverage(truth, mu - 1.96 * sigma, mu + 1.96 * sigma)
    err = cov.coverage_error(n)
    assert abs(c68 - 0.6827) < 4 * err
    assert abs(c95 - 0.95) < 4 * cov.coverage_error(n, 0.95)
    narrow = cov.coverage(truth, mu - 0.5 * sigma, mu + 0.5 * sigma)
    assert abs(narrow - 0.3829) < 4 * err  # erf(0.5/√2): a too-narrow posterior under-covers
    wide = cov.coverage(truth, mu - 2 * sigma, mu + 2 * sigma)
    assert wide > 0.94


def test_coverage_table_from_percentile_columns():
    rng = np.random.default_rng(1)
    n = 5000
    truth = rng.standard_normal(n)
    summ = {"x_p16": np.full(n, -1.0), "x_p84": np.full(n, 1.0), "x_p2_5": np.full(n, -1.96),
            "x_p97_5": np.full(n, 1.96)}
    tab = cov.coverage_table({"x": truth}, summ, ("x",))
    assert tab["x"]["n"] == n
    assert abs(tab["x"]["cov68"] - 0.6827) < 0.03 and abs(tab["x"]["cov95"] - 0.95) < 0.015


def test_bias_and_scatter_per_snr_bin():
    rng = np.random.default_rng(2)
    n = 40000
    truth = rng.uniform(9, 11, n)
    snr = rng.uniform(0, 40, n)
    sig = np.where(snr < 10, 0.3, 0.1)
    p50 = truth + 0.05 + sig * rng.standard_normal(n)
    r = cov.bias_scatter(truth, p50, snr, np.array([0, 10, 40]))
    assert r["n"].tolist() == [int((snr < 10).sum()), int((snr >= 10).sum())]
    np.testing.assert_allclose(r["bias"], [0.05, 0.05], atol=0.01)
    np.testing.assert_allclose(r["scatter"], [0.3, 0.1], rtol=0.05)
    np.testing.assert_allclose(r["rms"], np.sqrt(np.array([0.3, 0.1]) ** 2 + 0.05**2), rtol=0.05)
    one = cov.bias_scatter(truth, p50)  # no bins: one bin with every row
    assert one["n"].tolist() == [n]


def test_dex_scatter_between_two_methods():
    rng = np.random.default_rng(3)
    a = 10 ** rng.uniform(-1, 1, 10000)
    b = a * 10 ** (0.1 + 0.2 * rng.standard_normal(a.size))
    r = cov.dex_scatter(b, a, take_log10=True)
    assert r["n"] == a.size
    assert r["offset"] == pytest.approx(0.1, abs=0.01) and r["scatter"] == pytest.approx(0.2, rel=0.05)
    la = np.log10(a)
    assert cov.dex_scatter(la + 0.3, la)["offset"] == pytest.approx(0.3)
    assert cov.dex_scatter(np.array([-1.0, 1.0]), np.array([1.0, 1.0]), take_log10=True)["n"] == 1
