import numpy as np

from desi_assets.science import wavelength as wl


def test_arm_grids_match_desi_data_model():
    assert wl.ARMS["b"].wavelength()[[0, -1]].tolist() == [3600.0, 5800.0]
    assert wl.ARMS["r"].wavelength()[[0, -1]].tolist() == [5760.0, 7620.0]
    assert wl.ARMS["z"].wavelength()[[0, -1]].tolist() == [7520.0, 9824.0]
    assert [a.npix for a in wl.ARMS.values()] == [2751, 2326, 2881]


def test_binned_layout_is_171_145_180():
    assert wl.ARM_NBINS == {"b": 171, "r": 145, "z": 180}
    assert wl.N_BINS == 496
    assert [a.remainder for a in wl.ARMS.values()] == [15, 6, 1]
    s = wl.arm_bin_slices()
    assert (s["b"].start, s["r"].start, s["z"].start, s["z"].stop) == (0, 171, 316, 496)


def test_binned_wavelength_is_bin_mean():
    w = wl.binned_wavelength()
    assert w.shape == (496,)
    assert w[0] == np.mean(3600.0 + 0.8 * np.arange(16))
    assert np.all(np.diff(w[:171]) > 0)


def test_merged_grid_constants_follow_the_arms():
    assert wl.COMBINED_START_A == 3600.0 and wl.COMBINED_NPIX == 7781  # b start, (9824 - 3600) / 0.8 + 1
    grid = wl.combined_wavelength()
    assert grid.size == wl.COMBINED_NPIX and grid[[0, -1]].tolist() == [3600.0, 9824.0]
    for arm in wl.ARMS.values():  # every arm pixel sits on the merged grid
        assert np.isin(arm.wavelength(), grid).all()
