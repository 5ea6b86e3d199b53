"""Cosmic-web science: kNN on a lattice, T-web on analytic fields, partitioned == global (survey field and local
compact field), the survey field on analytic densities, bad input, filaments."""

from dataclasses import replace

import numpy as np
import pytest

from desi_assets.science.cosmic_web import (CosmicWebParams, SurveyField, cosmic_web, cosmic_web_partitioned,
                                            survey_field)
from desi_assets.science.cosmic_web.survey_field import survey_tidal_field
from desi_assets.science.cosmic_web import filaments as F
from desi_assets.science.cosmic_web import tweb as T
from desi_assets.science.cosmic_web.coords import C_KMS, comoving_distance, radecz_to_xyz
from desi_assets.science.cosmic_web.knn import projected_knn, surface_density


def _plane_lattice(a=1.0, n=7, dist=1e5):
    """A square n×n lattice of spacing a (Mpc) perpendicular to the line of sight at distance dist (Mpc)."""
    i, j = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    return np.stack([i.ravel() * a, j.ravel() * a, np.full(i.size, dist)], axis=1)


def test_knn_on_a_lattice_matches_hand_computed_distances():
    a = 1.5
    xyz = _plane_lattice(a)
    z = np.full(len(xyz), 0.1)
    centre = len(xyz) // 2
    d = projected_knn(xyz[[centre]], z[[centre]], xyz, z, ks=(1, 4, 5, 8, 9, 10, 12, 13), self_index=[centre],
                      r_start_mpc=1.0, r_max_mpc=30.0)[0]
    # neighbours of a square-lattice site: 4 at a, 4 at √2a, 4 at 2a, 8 at √5a
    want = a * np.array([1, 1, np.sqrt(2), np.sqrt(2), 2, 2, 2, np.sqrt(5)])
    np.testing.assert_allclose(d, want, rtol=1e-6)
    assert surface_density(5, d[[2]])[0] == pytest.approx(5 / (np.pi * 2 * a**2))  # D5 = √2 a


def test_knn_velocity_slice_and_search_limit():
    a = 1.0
    xyz = _plane_lattice(a)
    centre = len(xyz) // 2
    z = np.full(len(xyz), 0.1)
    # the 4 nearest sites (at a) are moved out of the ±1000 km/s slice (+1500 km/s); one at +900 km/s stays in
    sep = np.linalg.norm(xyz[:, :2] - xyz[centre, :2], axis=1)
    z2 = z.copy()
    z2[np.isclose(sep, a)] += 1500 / C_KMS
    z2[np.flatnonzero(np.isclose(sep, 2 * a))[0]] += 900 / C_KMS
    d_all = projected_knn(xyz[[centre]], z[[centre]], xyz, z, ks=(5,), self_index=[centre])[0, 0]
    d_cut = projected_knn(xyz[[centre]], z2[[centre]], xyz, z2, ks=(5,), self_index=[centre])[0, 0]
    assert d_all == pytest.approx(np.sqrt(2) * a, rel=1e-6)
    assert d_cut == pytest.approx(2 * a, rel=1e-6)  # 4 at √2a, then the 2a sites (one at +900 km/s counts)
    # a search limit below the 5th distance gives NaN, never a wrong distance
    assert np.isnan(projected_knn(xyz[[centre]], z[[centre]], xyz, z, ks=(5,), self_index=[centre],
                                  r_start_mpc=0.5, r_max_mpc=1.2)[0, 0])


def _lattice(n=64):
    lat = T.Lattice(np.zeros(3), (n, n, n), 1.0)
    x = (np.arange(n) + 0.5) - n / 2
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    return lat, X, Y, Z


@pytest.mark.parametrize("shape, expected", [("plane", 1), ("cylinder", 2), ("sphere", 3), ("hole", 0)])
def test_tweb_classifies_analytic_fields(shape, expected):
    lat, X, Y, Z = _lattice()
    s = 4.0
    field = {"plane": 2.0 * np.cos(2 * np.pi * X / 32.0),
             "cylinder": 3.0 * np.exp(-(X**2 + Y**2) / (2 * s**2)),
             "sphere": 3.0 * np.exp(-(X**2 + Y**2 + Z**2) / (2 * s**2)),
             "hole": -3.0 * np.exp(-(X**2 + Y**2 + Z**2) / (2 * s**2))}[shape]
    tensor = T.tidal_tensor(lat, field - field.mean())
    centre = np.array([[32.0, 32.0, 32.0]])  # X=Y=Z=0 lies between cells 31 and 32 (cell centres at i+0.5)
    lam = T.eigenvalues(T.tensor_at(lat, tensor, centre))[0]
    assert T.web_class(lam, 0.3) == expected
    np.testing.assert_allclose(lam.sum(), np.interp(0, X[:, 0, 0], (field - field.mean())[:, 32, 32]), atol=0.05)
    if shape == "sphere":
        np.testing.assert_allclose(lam, lam.mean(), rtol=0.02)  # isotropic: λ = δ/3 each


def test_point_segment_distance_and_exact_nearest_segment():
    segs = np.array([[[0, 0, 0], [10, 0, 0]], [[0, 5, 0], [0, 5, 10]]], float)
    pts = np.array([[5, 1, 0], [-3, 0, 4], [0, 5, 12], [20, 0, 0]], float)
    np.testing.assert_allclose(F.distance_to_segments(pts, segs, k=1), [1.0, 5.0, 2.0, 10.0])
    rng = np.random.default_rng(0)
    many = rng.uniform(0, 50, (300, 2, 3))
    p = rng.uniform(0, 50, (50, 3))
    brute = F.point_segment_distance(p[:, None], many[None, :, 0], many[None, :, 1]).min(1)
    np.testing.assert_allclose(F.distance_to_segments(p, many, k=2), brute)


def test_mst_skeleton_recovers_a_line_of_points():
    x = np.linspace(0, 100, 101)
    pts = np.stack([x, np.zeros_like(x), np.zeros_like(x)], 1)
    noise = np.random.default_rng(1).uniform(0, 100, (20, 3)) + [0, 40, 40]  # far away: cut by max_edge
    segs = F.mst_skeleton(np.concatenate([pts, noise]), max_edge_mpc=3.0, prune=2)
    assert len(segs) == 100 - 4  # 100 unit edges, two pruned at each end
    assert F.distance_to_segments(np.array([[50.0, 2.0, 0.0]]), segs)[0] == pytest.approx(2.0)


@pytest.fixture(scope="module")
def mock():
    from desi_assets.sources.mock.positions import PositionsMockConfig, make_positions_mock

    return make_positions_mock(PositionsMockConfig(radius_deg=12.0, zmin=0.15, zmax=0.25, density_mpc3=1e-3,
                                                   seed=3)).catalog


#: Compact T-web small enough for a test: reach 4·3 + 10 + 2√3·4 = 35.9 Mpc ≤ the 36 Mpc buffer, so a
#: partition reads an nside-16 pixel plus ~3° around it out of the 12° cap.
SMALL = CosmicWebParams(tracer_zmin=0.15, tracer_zmax=0.25, cell_mpc=4.0, smoothing_mpc=3.0, tidal_radius_mpc=10.0,
                        buffer_mpc=36.0, tidal_field="local")


def test_partitioned_equals_global_for_non_edge_galaxies(mock):
    import healpy as hp

    ra, dec, z = (mock[c].to_numpy() for c in ("ra", "dec", "z"))
    glob = cosmic_web(ra, dec, z, SMALL).columns  # defaults: no frame or n̄ handed over by hand
    pix = hp.ang2pix(16, ra, dec, nest=True, lonlat=True)
    inner_pix = np.bincount(pix[~glob["edge"]], minlength=hp.nside2npix(16))
    pixels = np.argsort(inner_pix)[-3:]  # the three nside-16 pixels with the most non-edge galaxies
    part = cosmic_web_partitioned(ra, dec, z, SMALL, nside=16, only_pixels=pixels)
    done = np.isin(pix, pixels)
    inner = done & ~glob["edge"]
    assert inner.sum() > 1000 and done.sum() < 0.5 * len(ra) and np.array_equal(part["edge"][done], glob["edge"][done])
    for col in ("d5_mpc", "d10_mpc", "sigma_5", "web_class", "dist_filament_mpc"):
        np.testing.assert_array_equal(part[col][inner], glob[col][inner], err_msg=col)
    for col in ("delta", "lambda1", "lambda2", "lambda3"):  # the same lattice cells: FFT round-off only
        np.testing.assert_allclose(part[col][inner], glob[col][inner], rtol=0, atol=1e-9, err_msg=col)
    # control: the whole-lattice tidal field reaches past any buffer, and the comparison sees it
    far = replace(SMALL, tidal_radius_mpc=None)
    glob_far = cosmic_web(ra, dec, z, far).columns
    part_far = cosmic_web_partitioned(ra, dec, z, far, nside=16, only_pixels=pixels[-1:])
    one = (pix == pixels[-1]) & ~glob["edge"]
    assert np.nanmax(np.abs(part_far["lambda1"][one] - glob_far["lambda1"][one])) > 1e-3


def _best_pixels(ra, dec, edge, k=3):
    import healpy as hp

    pix = hp.ang2pix(16, ra, dec, nest=True, lonlat=True)
    inner_pix = np.bincount(pix[~edge], minlength=hp.nside2npix(16))
    return pix, np.argsort(inner_pix)[-k:]  # the k nside-16 pixels with the most non-edge galaxies


def test_survey_field_partitioned_equals_global_exactly(mock, tmp_path):
    ra, dec, z = (mock[c].to_numpy() for c in ("ra", "dec", "z"))
    params = replace(SMALL, tidal_field="survey")  # one survey field; the buffer is for kNN and edges only
    res = cosmic_web(ra, dec, z, params)
    glob = res.columns
    field = res.extra["field"]
    pix, pixels = _best_pixels(ra, dec, glob["edge"])
    # the upstream asset's route: the field built once from the whole catalog, saved, memory-mapped back
    stored = SurveyField.load(survey_field(ra, dec, z, params).save(tmp_path / "field"))
    np.testing.assert_array_equal(stored.cells, field.cells)
    np.testing.assert_array_equal(stored.tensor, field.tensor)
    part = cosmic_web_partitioned(ra, dec, z, params, nside=16, only_pixels=pixels, field=stored)
    done = np.isin(pix, pixels)
    inner = done & ~glob["edge"]
    assert inner.sum() > 1000 and done.sum() < 0.5 * len(ra)
    for col in ("d5_mpc", "d10_mpc", "sigma_5", "dist_filament_mpc"):
        np.testing.assert_array_equal(part[col][inner], glob[col][inner], err_msg=col)
    for col in ("web_class", "delta", "lambda1", "lambda2", "lambda3"):  # every galaxy, edge ones included
        np.testing.assert_array_equal(part[col][done], glob[col][done], err_msg=col)
    assert (glob["web_class"][done] >= 0).mean() > 0.9
    # the survey field differs from what a partition's own lattice would give: it is not a local quantity
    local = cosmic_web_partitioned(ra, dec, z, replace(params, tidal_field="local", tidal_radius_mpc=None),
                                   nside=16, only_pixels=pixels[-1:])
    one = (pix == pixels[-1]) & ~glob["edge"]
    assert np.nanmax(np.abs(local["lambda1"][one] - glob["lambda1"][one])) > 1e-3
    # the survey fractions come from the stored cells alone
    f = field.volume_fractions(params.lambda_th, params.window_min)
    assert sum(f.values()) == pytest.approx(1.0) and min(f.values()) > 0


def _box_points(density, n_per_side=48, cell=2.0, nbar=0.05, seed=0):
    """Randoms uniform in a box and galaxies drawn with probability ∝ density(x − centre) (Mpc)."""
    rng = np.random.default_rng(seed)
    size = n_per_side * cell
    box = lambda n: rng.uniform(0, size, (n, 3))  # noqa: E731
    rand = box(int(nbar * size**3))
    cand = box(int(4 * nbar * size**3))
    rho = density(cand - size / 2)
    gal = cand[rng.uniform(0, rho.max(), len(cand)) < rho]
    return gal, rand, size


@pytest.mark.parametrize("shape, expected", [("plane", 1), ("cylinder", 2), ("sphere", 3), ("hole", 0)])
def test_survey_field_classifies_analytic_densities(shape, expected):
    s = 5.0
    dens = {"plane": lambda r: 1 + 2.0 * np.exp(-r[:, 0] ** 2 / (2 * s**2)),
            "cylinder": lambda r: 1 + 4.0 * np.exp(-(r[:, 0] ** 2 + r[:, 1] ** 2) / (2 * s**2)),
            "sphere": lambda r: 1 + 8.0 * np.exp(-(r**2).sum(1) / (2 * s**2)),
            "hole": lambda r: 1 - 0.9 * np.exp(-(r**2).sum(1) / (2 * s**2))}[shape]
    gal, rand, size = _box_points(dens)
    nbar = len(gal) / size**3
    field = survey_tidal_field(gal, rand, nbar, len(rand) / size**3, cell=2.0, r_s=2.0, pad=0.0, window_min=0.0)
    _, tensor, _ = field.sample(np.array([[size / 2] * 3]))
    lam = T.eigenvalues(tensor)[0]
    assert T.web_class(lam, 0.3) == expected, lam
    # stored compactly: float32, every stored cell's T_ij traceless part sums with δ/… to tr T = δ
    assert field.tensor.dtype == np.float32 and field.cells.size == np.prod(field.lattice.shape)
    trace = field.tensor[0] + field.tensor[1] + field.tensor[2]
    np.testing.assert_allclose(trace, field.delta - field.delta.mean(), atol=1e-3)


def test_survey_field_on_a_sub_lattice_and_outside_the_footprint():
    gal, rand, size = _box_points(lambda r: 1 + np.exp(-(r**2).sum(1) / 50.0), n_per_side=24)
    field = survey_tidal_field(gal, rand, len(gal) / size**3, len(rand) / size**3, cell=2.0, r_s=2.0, pad=10.0)
    sub = T.Lattice(field.lattice.origin + 4 * 2.0, (6, 7, 8), 2.0)
    delta, window, tensor = field.on_lattice(sub)
    full = np.zeros(int(np.prod(field.lattice.shape)))
    full[field.flat_indices()] = field.delta
    np.testing.assert_array_equal(delta, full.reshape(field.lattice.shape)[4:10, 4:11, 4:12])
    d, t, w = field.sample(np.array([[1e4, 0, 0], [size / 2] * 3]))  # far outside: nothing, no error
    assert d[0] == 0 and w[0] == 0 and not t[0].any() and w[1] > 0.5
    with pytest.raises(ValueError, match="window"):
        field.on_lattice(T.Lattice(field.lattice.origin + 0.5, (4, 4, 4), 2.0))


def _c_order_copy(field: SurveyField) -> SurveyField:
    """The same field stored the pre-brick way: sorted flat C-order indices (brick = the whole lattice)."""
    flat = field.flat_indices()
    order = np.argsort(flat)
    return SurveyField(field.lattice, flat[order], field.delta[order], field.window[order], field.tensor[:, order],
                       field.mean_density_mpc3, field.settings)


def test_survey_field_brick_order_gives_the_c_order_values(tmp_path):
    import json

    gal, rand, size = _box_points(lambda r: 1 + np.exp(-(r**2).sum(1) / 50.0), n_per_side=24)
    field = survey_tidal_field(gal, rand, len(gal) / size**3, len(rand) / size**3, cell=2.0, r_s=2.0, pad=10.0)
    assert field.brick == (16, 16, 16) and all(n > 16 and n % 16 for n in field.lattice.shape)  # partial bricks
    assert np.all(np.diff(field.cells) > 0) and not np.all(np.diff(field.flat_indices()) > 0)  # not C order
    flat = _c_order_copy(field)
    assert flat.brick == flat.lattice.shape
    pts = np.random.default_rng(3).uniform(-15, size + 15, (5000, 3))  # inside, at the rim and outside
    for a, b in zip(field.sample(pts), flat.sample(pts)):
        np.testing.assert_array_equal(a, b)
    idx = np.random.default_rng(4).integers(0, np.prod(field.lattice.shape), 3000)
    np.testing.assert_array_equal(field.window_at_cells(idx), flat.window_at_cells(idx))
    # saved and memory-mapped back in brick order; a field saved before bricks (no "brick") reads as C order
    back = SurveyField.load(field.save(tmp_path / "f"))
    assert back.brick == field.brick and isinstance(back.cells, np.memmap)
    for start, shape in (((3, 17, 30), (20, 9, 5)), ((-4, 0, 29), (40, 50, 9)), ((0, 0, 0), field.lattice.shape)):
        lat = T.Lattice(field.lattice.origin + np.array(start) * 2.0, shape, 2.0)
        for a, b, c in zip(field.on_lattice(lat), flat.on_lattice(lat), back.on_lattice(lat)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            np.testing.assert_array_equal(np.asarray(c), np.asarray(b))
    for a, b in zip(back.sample(pts), field.sample(pts)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.window_at_cells(idx), field.window_at_cells(idx))
    # a loaded field samples from the bricks it needs, read into memory: those bricks' rows and no others
    near, _ = T._cic_weights(field.lattice, field.lattice.origin + np.random.default_rng(5).uniform(8, 20, (30, 3)))
    sub = back.bricks_at(near)
    need = np.unique(back.keys_of(near) // back.brick_cells)
    assert not isinstance(sub.cells, np.memmap) and need.size < back.n_bricks
    assert sub.cells.size == (back.starts[need + 1] - back.starts[need]).sum() < back.cells.size
    np.testing.assert_array_equal(sub.window_at_cells(near), field.window_at_cells(near))
    old = flat.save(tmp_path / "old")
    meta = json.loads((old / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "brick"}))
    np.testing.assert_array_equal(SurveyField.load(old).sample(pts)[0], field.sample(pts)[0])


def test_survey_field_region_reads_only_its_bricks():
    """A region that crosses every plane of the survey (a line of sight) reads its bricks, not every plane's rows."""
    shape = (64, 96, 96)
    lat = T.Lattice(np.zeros(3), shape, 1.0)
    keys = np.sort(survey_field_keys(shape))
    m = keys.size
    field = SurveyField(lat, keys, np.zeros(m, np.float32), np.ones(m, np.float32), np.zeros((6, m), np.float32),
                        1.0, {}, (16, 16, 16))
    pts = np.random.default_rng(0).uniform([1.5, 40.5, 40.5], [62.5, 55.5, 55.5], (20000, 3))  # cells 1..63 × 40..56
    idx, _ = T._cic_weights(lat, pts)
    pages = lambda f: np.unique(f._rows(idx)[0] * 4 // 4096).size  # noqa: E731  4 KiB pages of a float32 array
    bricks = 4 * 2 * 2  # the line of sight crosses 4 × 2 × 2 bricks of 16³ cells (16 KiB a float32 array)
    assert pages(field) <= bricks * (16**3 * 4 // 4096 + 1)  # + 1: a brick need not start on a page
    assert pages(field) < 0.5 * pages(_c_order_copy(field))


def survey_field_keys(shape):
    """Storage keys of every cell of a lattice (bricks of 16)."""
    from desi_assets.science.cosmic_web.survey_field import brick_keys

    return brick_keys(np.indices(shape).reshape(3, -1), shape, (16, 16, 16))


def test_params_reject_a_buffer_below_the_tweb_reach():
    with pytest.raises(ValueError, match="locality_mpc"):
        replace(SMALL, buffer_mpc=30.0)
    assert replace(SMALL, tidal_radius_mpc=None, buffer_mpc=30.0).locality_mpc() == np.inf
    assert replace(SMALL, tidal_field="survey", buffer_mpc=30.0).locality_mpc() == 0.0  # the field is upstream
    with pytest.raises(ValueError, match="tidal_field"):
        replace(SMALL, tidal_field="global")


def test_compact_tidal_kernel_is_local_and_keeps_the_trace():
    lat = T.Lattice(np.zeros(3), (40, 40, 40), 1.0)
    delta = np.zeros(lat.shape)
    delta[20, 20, 20] = 1.0
    tensor = T.tidal_tensor(lat, delta, radius=6.0)
    np.testing.assert_allclose(tensor[0] + tensor[1] + tensor[2], delta, atol=1e-6)  # tr T = δ
    i, j, k = np.meshgrid(*(np.arange(40) - 20,) * 3, indexing="ij")
    far = i**2 + j**2 + k**2 > 6.0**2
    assert max(np.abs(c[far]).max() for c in tensor) < 1e-6  # nothing beyond the tidal radius
    near = T.tidal_tensor(lat, delta)  # the whole-lattice kernel: same shear inside, nonzero outside
    assert abs(tensor[0][23, 20, 20] - near[0][23, 20, 20]) < 0.05 * abs(near[0][23, 20, 20])
    assert np.abs(near[0][far]).max() > 1e-4


def test_self_density_is_a_lone_tracers_own_delta():
    lat = T.Lattice(np.zeros(3), (32, 32, 32), 2.0)
    p = np.array([[31.3, 30.1, 33.7]])
    nbar, r_s = 1e-3, 3.0
    window = np.ones(lat.shape)  # fully inside the footprint
    rho = T.gaussian_smooth(lat, T.cic_assign(lat, p), r_s, truncate_sigma=4.0) / (nbar * lat.cell**3)
    d_self = T.self_density(lat, p, nbar, r_s, 4.0, window)
    np.testing.assert_allclose(d_self, T.cic_interpolate(lat, rho, p), rtol=1e-10)
    # ≈ the Gaussian's peak over n̄, with CIC assignment and interpolation each adding h²/6 to σ² per axis
    sig2 = r_s**2 + lat.cell**2 / 3
    assert d_self[0] == pytest.approx(1 / ((2 * np.pi * sig2) ** 1.5 * nbar), rel=0.1)


def test_bad_input_is_flagged_never_dropped():
    rng = np.random.default_rng(2)
    n = 400
    ra, dec = rng.uniform(150, 152, n), rng.uniform(1, 3, n)
    z = rng.uniform(0.06, 0.12, n)
    z[0], z[1] = np.nan, -0.01
    ids = np.arange(n)
    ids[5] = ids[4]  # duplicate target
    res = cosmic_web(ra, dec, z, CosmicWebParams(tracer_zmin=0.05, tracer_zmax=0.15), ids=ids)
    c = res.columns
    assert len(c["status"]) == n
    assert list(c["status"][:2]) == ["invalid_redshift"] * 2 and np.isnan(c["d5_mpc"][:2]).all()
    assert c["status"][5] == "duplicate" and c["d5_mpc"][5] == c["d5_mpc"][4]
    assert res.n_tracers == n - 3
    assert np.isfinite(c["d5_mpc"][6:]).mean() > 0.9


def test_empty_catalog_and_single_galaxy():
    p = CosmicWebParams()
    empty = cosmic_web(np.zeros(0), np.zeros(0), np.zeros(0), p)
    assert all(len(v) == 0 for v in empty.columns.values())
    one = cosmic_web(np.array([150.0]), np.array([2.0]), np.array([0.2]), p).columns
    assert np.isnan(one["d5_mpc"][0]) and one["edge"][0] and one["status"][0] == "ok"
    assert cosmic_web_partitioned(np.zeros(0), np.zeros(0), np.zeros(0), p, nside=8)["d5_mpc"].size == 0


def test_params_reject_a_buffer_below_two_smoothing_lengths():
    with pytest.raises(ValueError, match="buffer_mpc"):
        CosmicWebParams(smoothing_mpc=10.0, buffer_mpc=15.0, tidal_radius_mpc=None)


def test_coordinates_match_astropy():
    from astropy.cosmology import Planck18

    z = np.array([0.01, 0.1, 0.35])
    np.testing.assert_allclose(comoving_distance(z), Planck18.comoving_distance(z).value, rtol=1e-5)
    xyz = radecz_to_xyz(np.array([0.0, 90.0]), np.array([0.0, 0.0]), np.array([0.1, 0.1]))
    np.testing.assert_allclose(xyz[:, :2], [[Planck18.comoving_distance(0.1).value, 0], [0, xyz[1, 1]]], atol=1e-6)


def test_partition_slice_reads_one_plane_and_draws_the_same_plane_as_the_whole_box(mock, tmp_path):
    ra, dec, z = (mock[c].to_numpy() for c in ("ra", "dec", "z"))
    params = replace(SMALL, tidal_field="survey")
    whole = cosmic_web(ra, dec, z, params, make_slice=True)  # builds the field: the box's dense lattice
    stored = SurveyField.load(whole.extra["field"].save(tmp_path / "field"))
    part = cosmic_web(ra, dec, z, params, make_slice=True, field=stored)  # a partition's route: one plane
    assert whole.extra["lattice"].shape[1] > 1 and part.extra["lattice"].shape[1] == 1
    a, b = whole.extra["slice"], part.extra["slice"]
    np.testing.assert_array_equal(a["delta"], b["delta"])
    np.testing.assert_array_equal(a["class"], b["class"])
    assert a["extent"] == b["extent"] and np.isfinite(a["delta"]).any()
