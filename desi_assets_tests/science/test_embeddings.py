"""SpectrumTransformer pieces against hand-computed values: tokens, masking, λ embedding, loss, robustness."""

import numpy as np
import pytest
import torch

from desi_assets.science.embeddings import evaluate as ev
from desi_assets.science.embeddings.model import ArchConfig, SpectrumTransformer, load_model, reconstruction_loss, \
    save_model, token_tensors
from desi_assets.science.embeddings.tokens import REFUSALS, grid_shifts, tokenize, tokenize_desi, wavelength_features
from desi_assets.science.embeddings.train import BudgetSchedule, TrainSettings, embed_arms, embed_tokens, predict_supervised, \
    random_patch_mask, train_embedder, train_supervised
from desi_assets.science.wavelength import ARMS

ARCH = ArchConfig(patch=8, width=32, heads=4, encoder_layers=1, decoder_layers=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SpectrumTransformer(ARCH).eval()


def spectrum(wave: np.ndarray, z: float = 0.3, amp: float = 1.0) -> np.ndarray:
    """A smooth continuum with two Gaussian emission lines at (1+z)·[3727, 5007] Å."""
    f = 1.0 + 0.3 * np.sin(wave / 700.0)
    for line in (3727.0, 5007.0):
        f = f + amp * 3 * np.exp(-0.5 * ((wave - line * (1 + z)) / 4.0) ** 2)
    return f


def test_tokenize_validity_normalisation_and_padding():
    wave = np.arange(10, dtype=float)
    flux = np.array([[2.0, 4, 4, 4, 6, np.nan, np.nan, np.nan, 1, 1]])
    ivar = np.ones_like(flux)
    mask = np.zeros_like(flux, dtype=np.int32)
    mask[0, 3] = 1
    tok = tokenize([wave], [flux], [ivar], [mask], patch=4)
    assert tok.flux.shape == (1, 3, 4)  # 10 pixels -> 3 patches, the last padded with 2 bad pixels
    good = np.isfinite(flux[0]) & (mask[0] == 0)
    assert tok.norm[0] == pytest.approx(np.median(np.abs(flux[0][good])))  # median of 2,4,4,6,1,1 = 3
    assert tok.norm[0] == 3.0
    # patch 0: 1 bad of 4 -> valid; patch 1: 3 bad -> invalid; patch 2: 2 good of 4 (2 padding) -> valid
    assert tok.valid[0].tolist() == [True, False, True]
    assert tok.flux[0, 0].tolist() == pytest.approx([2 / 3, 4 / 3, 4 / 3, 0.0])
    assert tok.ivar[0, 0, 0] == pytest.approx(9.0)
    assert tok.inside[2].tolist() == [True, True, False, False]


def test_random_patch_mask_hides_share_of_valid_only():
    valid = torch.tensor([[True] * 10 + [False] * 6, [True] + [False] * 15])
    hidden = random_patch_mask(valid, 0.5, torch.Generator().manual_seed(0))
    assert int(hidden[0].sum()) == 5 and not hidden[0, 10:].any()
    assert int(hidden[1].sum()) == 0  # one valid patch stays visible


def test_wavelength_features_hand_computed():
    f = wavelength_features(np.array([0.0, 2.0]), n_freq=2, min_period_a=4.0, max_period_a=8.0)
    # periods 4 and 8 Å: at λ = 2 Å phases π and π/2
    np.testing.assert_allclose(f[0], [0, 0, 1, 1], atol=1e-12)
    np.testing.assert_allclose(f[1], [0, 1, -1, 0], atol=1e-12)


def test_loss_hand_computed():
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    y = torch.tensor([[2.0, 2.0, 0.0]])
    ivar = torch.tensor([[4.0, 1.0, 1.0]])
    m = torch.tensor([[True, True, False]])
    # (1·4 + 0·1) / 2
    assert float(reconstruction_loss(pred, y, ivar, m)) == pytest.approx(2.0)


def test_key_padding_mask_excludes_invalid_patches(model):
    wave = 3600 + 0.8 * np.arange(64)
    flux = spectrum(wave)[None]
    ivar = np.full_like(flux, 100.0)
    tok = tokenize([wave], [flux], [ivar], [None], ARCH.patch)
    other = flux.copy()
    other[0, 8:16] = np.nan  # patch 1 wholly bad: invalid, excluded from attention and from the mean
    tok2 = tokenize([wave], [other], [ivar], [None], ARCH.patch)
    assert not tok2.valid[0, 1]
    junk = flux.copy()
    junk[0, 8:16] = 1e6  # the same patch with garbage flux but also masked
    mask = np.zeros_like(flux, dtype=np.int32)
    mask[0, 8:16] = 1
    tok3 = tokenize([wave], [junk], [ivar], [mask], ARCH.patch)
    v2, _ = embed_tokens(model, tok2)
    v3, _ = embed_tokens(model, tok3)
    np.testing.assert_allclose(v2, v3, rtol=1e-4, atol=1e-5)  # bad pixels' values never reach the vector
    v1, _ = embed_tokens(model, tok)
    assert not np.allclose(v1, v2)


def test_flux_scale_invariance(model):
    arms = {}
    rng = np.random.default_rng(1)
    for a, arm in ARMS.items():
        w = arm.wavelength()
        f = spectrum(w)[None] + rng.normal(0, 0.05, (1, arm.npix))
        arms[a] = (f.astype(np.float32), np.full((1, arm.npix), 400.0, np.float32), np.zeros((1, arm.npix), np.int32))
    scaled = {a: (f * 1e3, i / 1e6, m) for a, (f, i, m) in arms.items()}
    v1, c1, r1 = embed_arms(model, arms)
    v2, c2, r2 = embed_arms(model, scaled)
    assert r1[0] == r2[0] == 0
    assert np.max(np.abs(v1 - v2)) / np.max(np.abs(v1)) < 1e-4
    assert c2[0] == pytest.approx(c1[0], rel=1e-4)


def test_grid_independence(model):
    """The same spectrum on two grids (different start, patch boundaries shifted) gives nearly the same vector."""
    g1 = 3600 + 0.8 * np.arange(4000)
    g2 = 3603.7 + 0.8 * np.arange(3990)
    ivar = lambda g: np.full((1, g.size), 100.0)  # noqa: E731
    a1, = embed_tokens(model, tokenize([g1], [spectrum(g1)[None]], [ivar(g1)], [None], ARCH.patch))[:1]
    a2, = embed_tokens(model, tokenize([g2], [spectrum(g2)[None]], [ivar(g2)], [None], ARCH.patch))[:1]
    b, = embed_tokens(model, tokenize([g1], [spectrum(g1, z=0.9, amp=3)[None]], [ivar(g1)], [None], ARCH.patch))[:1]
    d = ARCH.width  # mean_std vector: the mean of the token states, then their standard deviation
    same, diff = np.linalg.norm(a1[:, :d] - a2[:, :d]), np.linalg.norm(a1[:, :d] - b[:, :d])
    assert same < 0.35 * diff, (same, diff)  # the mean, random-init encoder: 0.29 measured; a grid-tied one ~1
    same, diff = np.linalg.norm(a1[:, d:] - a2[:, d:]), np.linalg.norm(a1[:, d:] - b[:, d:])
    assert same < 0.5 * diff, (same, diff)  # the std (fewer tokens carry it, so patch phase shows more): 0.45


def test_bad_inputs_refused_or_finite(model):
    n = 5
    arms = {a: (np.ones((n, arm.npix), np.float32), np.ones((n, arm.npix), np.float32),
                np.zeros((n, arm.npix), np.int32)) for a, arm in ARMS.items()}
    arms["b"][2][0] = 1  # row 0: b arm all masked -> still embeds from r and z
    arms["r"][0][1] = np.nan  # row 1: r arm NaN flux
    for a in ARMS:  # row 2: everything NaN -> refused
        arms[a][0][2] = np.nan
        arms[a][1][3] = 0.0  # row 3: ivar 0 everywhere -> refused
        arms[a][0][4] = 0.0  # row 4: zero flux -> no positive median -> refused
    vec, chi2, refused = embed_arms(model, arms)
    assert np.isfinite(vec).all()
    assert refused.tolist() == [0, 0, 1, 1, 2]
    assert np.isfinite(chi2[:2]).all()
    # shorter than one patch: 3 pixels pad to one patch that is mostly padding -> refused with a reason
    tok = tokenize([np.arange(3.0)], [np.ones((1, 3))], [np.ones((1, 3))], [None], ARCH.patch)
    assert tok.refused[0] == 3 and "patch" in tok.reasons()[0]
    # another survey's grid: SDSS log-linear 3800-9200 Å, 1e-4 dex pixels
    sdss = 10 ** (3.5798 + 1e-4 * np.arange(3840))
    v, c = embed_tokens(model, tokenize([sdss], [spectrum(sdss)[None]], [np.full((1, sdss.size), 25.0)], [None],
                                        ARCH.patch))
    assert np.isfinite(v).all() and np.isfinite(c).all()
    assert set(REFUSALS) >= {0, 1, 2, 3}
    empty = {a: (np.zeros((0, arm.npix), np.float32),) * 2 + (np.zeros((0, arm.npix), np.int32),)
             for a, arm in ARMS.items()}
    v0, c0, r0 = embed_arms(model, empty)  # an empty partition
    assert v0.shape == (0, ARCH.embedding_dim) and r0.size == 0


def test_cls_pooling_and_save_load(tmp_path):
    torch.manual_seed(1)
    m = SpectrumTransformer(ArchConfig(**{**ARCH.__dict__, "pooling": "cls"})).eval()
    wave = 3600 + 0.8 * np.arange(64)
    tok = tokenize([wave], [spectrum(wave)[None]], [np.ones((1, 64))], [None], 8)
    v, _ = embed_tokens(m, tok)
    version = save_model(m, tmp_path / "m.pt", {"training_set_version": 3})
    m2, meta = load_model(tmp_path / "m.pt")
    assert meta["version"] == version and meta["arch"]["pooling"] == "cls"
    np.testing.assert_allclose(embed_tokens(m2, tok)[0], v, rtol=1e-5)


def test_metrics_hand_computed():
    assert ev.nmad(np.array([0.0, 0.01, -0.01, 0.02, 0.0])) == pytest.approx(1.4826 * 0.01)
    assert ev.outlier_rate(np.array([0.0, 0.2, -0.16, 0.1])) == 0.5
    s = ev.class_scores(np.array(["GALAXY", "GALAXY", "QSO", "STAR"]), np.array(["GALAXY", "QSO", "QSO", "STAR"]))
    assert s["accuracy"] == 0.75 and s["recall_GALAXY"] == 0.5 and s["balanced_accuracy"] == pytest.approx(5 / 6)
    x = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    lab = np.array(["GALAXY"] * 3 + ["STAR"] * 3)
    assert ev.neighbour_purity(x, lab, np.zeros(6), k=2)["purity"] == 1.0


def test_supervised_ceiling_learns_class_and_redshift():
    """The ceiling trainer fits labels a probe could not guess: line vs no line, and z from the line's position."""
    rng = np.random.default_rng(0)
    wave = 3600 + 0.8 * np.arange(1024)
    n = 96
    z = rng.uniform(0.0, 0.15, n)  # the line stays on the grid (3600–4418 Å)
    label = np.arange(n) % 2  # 1: emission line at 3727(1+z); 0: continuum only, at rest like a star
    z = np.where(label == 1, z, 0.0)
    line = label[:, None] * 4 * np.exp(-0.5 * ((wave - 3727 * (1 + z[:, None])) / 4) ** 2)
    flux = 1.0 + 0.3 * np.sin(wave / 700.0) + line + rng.normal(0, 0.02, (n, wave.size))
    flux[-1] = np.nan  # refused row: no good pixel
    tok = tokenize([wave], [flux], [np.full(flux.shape, 2500.0)], [None], 64)
    arch = ArchConfig(patch=64, width=32, heads=4, encoder_layers=1, decoder_layers=1)
    res = train_supervised(tok, label, z, arch, TrainSettings(epochs=60, batch_size=16, lr=3e-3, num_threads=1))
    assert res.history[-1][1] < 0.5 * res.history[0][1]
    code, zp, vec = predict_supervised(res, tok)
    assert code[-1] == -1 and np.isnan(zp[-1])
    assert vec.shape == (n, arch.embedding_dim) and not vec[-1].any() and np.isfinite(vec).all()
    assert np.mean(code[:-1] == label[:-1]) >= 0.95
    has_line = label[:-1] == 1
    assert np.median(np.abs(zp[:-1][has_line] - z[:-1][has_line])) < 0.02  # guessing the mean: about 0.04


def test_mean_std_pooling_hand_computed():
    m = SpectrumTransformer(ArchConfig(**{**ARCH.__dict__, "pooling": "mean_std"}))
    h = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, -100.0]]])
    pad = torch.tensor([[False, False, True]])  # the third token is padding: in neither moment
    v = m.pool(h, pad)
    assert m.cfg.embedding_dim == 2 * ARCH.width
    np.testing.assert_allclose(v.numpy(), [[2.0, 4.0, 1.0, 2.0]], atol=1e-5)
    with pytest.raises(ValueError, match="unknown pooling"):
        ArchConfig(pooling="max")


def test_shifted_patch_grid_and_training_on_views():
    """tokenize_desi(shift=s) drops each arm's first s pixels; train_embedder cycles through several views."""
    assert grid_shifts(64, 4) == [0, 16, 32, 48] and grid_shifts(8, 1) == [0]
    with pytest.raises(ValueError):
        grid_shifts(8, 0)
    rng = np.random.default_rng(3)
    arms = {a: ((1 + 0.1 * rng.standard_normal((6, arm.npix))).astype(np.float32),
                np.full((6, arm.npix), 100.0, np.float32), np.zeros((6, arm.npix), np.int32)) for a, arm in ARMS.items()}
    t0, t4 = tokenize_desi(arms, ARCH.patch), tokenize_desi(arms, ARCH.patch, 4)
    b = ARMS["b"].wavelength()
    assert t0.wave[0, 0] == pytest.approx(b[0]) and t4.wave[0, 0] == pytest.approx(b[4])
    assert t4.inside.sum() == t0.inside.sum() - 4 * len(ARMS)
    with pytest.raises(ValueError, match="shift"):
        tokenize_desi(arms, ARCH.patch, ARCH.patch)
    res = train_embedder([t0, t4], t0, ARCH, TrainSettings(epochs=2, batch_size=3, num_threads=1))
    assert len(res.history) == 2 and all(np.isfinite(h[1]) and np.isfinite(h[2]) for h in res.history)


def test_budget_schedule_anneals_by_steps_or_by_time():
    """Warm-up from lr/25, cosine to lr/1e4; a time budget ends (and fully anneals) the run before its steps do."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    by_steps = BudgetSchedule(opt, 1.0, total_steps=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(1 / 25)
    assert by_steps.lr_at(0.1) == pytest.approx(1.0) and by_steps.lr_at(0.55) == pytest.approx(0.5 + 0.5e-4)
    for _ in range(10):
        assert not by_steps.done
        by_steps.step()
    assert by_steps.done and not by_steps.by_time and opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    now = [0.0]
    by_time = BudgetSchedule(opt, 1.0, total_steps=1000, max_seconds=100.0, clock=lambda: now[0])
    now[0] = 55.0
    by_time.step()  # 1 step of 1000, but 55% of the time: the lr follows the clock
    assert by_time.progress() == pytest.approx(0.55) and opt.param_groups[0]["lr"] == pytest.approx(0.5 + 0.5e-4)
    by_time.reserve = 10.0  # time kept for the last validation pass: the budget for steps is 90 s
    now[0] = 90.0
    by_time.step()
    assert by_time.done and by_time.by_time and opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_cross_validation_in_worker_processes_matches_serial():
    """jobs = 2 fits the folds in loky workers; the predictions equal the serial ones, fold for fold."""
    rng = np.random.default_rng(1)
    lab = np.array(["GALAXY", "QSO", "STAR"])[np.arange(90) % 3]
    x = rng.normal(0, 1, (90, 4)) + 3.0 * (np.arange(90) % 3)[:, None]
    z = np.where(lab == "STAR", 0.0, rng.uniform(0.1, 1.0, 90))
    serial = ev.cross_validate(x, lab, z, folds=3, mlp_iter=50)
    parallel = ev.cross_validate(x, lab, z, folds=3, mlp_iter=50, jobs=2)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a.test, b.test)
        np.testing.assert_array_equal(a.probe_class, b.probe_class)
        np.testing.assert_allclose(a.z_pred, b.z_pred, rtol=1e-5)
    assert np.mean(np.concatenate([r.probe_class for r in serial]) == lab[np.concatenate([r.test for r in serial])]) > 0.9


def test_compacted_encoder_equals_key_padded_encoder(model):
    """Dropping padded tokens before the encoder (MAE-style) leaves the visible states and the vector unchanged."""
    from desi_assets.science.embeddings.model import compact_tokens

    x = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    cx, cpad = compact_tokens(x, torch.tensor([[True, False, True, False], [False, False, False, True]]))
    assert cx[..., 0].tolist() == [[1, 3, 0], [4, 5, 6]] and cpad.tolist() == [[False, False, True], [False] * 3]
    rng = np.random.default_rng(5)
    wave = 3600 + 0.8 * np.arange(160)
    tok = tokenize([wave], [spectrum(wave)[None] + 0.05 * rng.standard_normal((3, 160))], [np.full((3, 160), 100.0)],
                   [None], ARCH.patch)
    t = token_tensors(tok, ARCH)
    visible = t["valid"] & torch.from_numpy(rng.random(t["valid"].shape) < 0.6)
    visible[:, 0] = True
    with torch.no_grad():
        h, pad = model.encode_tokens(t["flux"], t["good"], t["wfeat"], visible)
        full = model.flux_in(torch.cat([t["flux"], t["good"].float()], -1)) + model.wave_in(t["wfeat"]).expand(3, -1, -1)
        ref = model.enc_norm(model.encoder(full, src_key_padding_mask=~visible))
        np.testing.assert_allclose(model.pool(h, pad).numpy(), model.pool(ref, ~visible).numpy(), rtol=1e-4, atol=1e-5)
    assert h.shape[1] == int(visible.sum(1).max()) < visible.shape[1]


def test_decoder_is_queried_at_the_hidden_patches_only(model):
    """The training loss decodes only hidden patches: it counts exactly their good pixels, and a row's predictions
    do not depend on the padded queries another row in the batch forces."""
    from desi_assets.science.embeddings.train import _hidden_terms

    rng = np.random.default_rng(2)
    wave = 3600 + 0.8 * np.arange(160)
    flux = spectrum(wave)[None] + 0.05 * rng.standard_normal((2, 160))
    flux[1, 40:44] = np.nan  # a few bad pixels inside a hidden patch
    t = token_tensors(tokenize([wave], [flux], [np.full((2, 160), 100.0)], [None], ARCH.patch), ARCH)
    hidden = torch.zeros_like(t["valid"])
    hidden[0, [1, 3, 5, 7]] = True
    hidden[1, [2, 5]] = True
    with torch.no_grad():
        pred, f, iv, m = _hidden_terms(model, t, hidden)
        alone = _hidden_terms(model, {k: (v if k == "wfeat" else v[1:]) for k, v in t.items()}, hidden[1:])[0]
    assert pred.shape == (2, 4, ARCH.patch) and int(m.sum()) == int((t["good"] & hidden.unsqueeze(-1)).sum())
    np.testing.assert_allclose(pred[1, :2].numpy(), alone[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(f[1, :2].numpy(), t["flux"][1, [2, 5]].numpy())
