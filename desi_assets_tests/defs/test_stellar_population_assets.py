"""The stellar-population layer on a temporary lakehouse: model reuse, rows and statuses per partition, bad input,
the Bagpipes subset (sampler stubbed; the real smoke test is science-side, `slow`), validation plots and checks."""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from desi_assets.defs.ingest.assets import coadd_ingest
from desi_assets.defs.partitions import coadds_partitions
from desi_assets.defs.physics.assets import physics
from desi_assets.defs.resources import make_resources
from desi_assets.defs.stellar_populations.assets import (
    stellar_population_model,
    stellar_population_posteriors,
    stellar_population_validation,
    stellar_populations,
)
from desi_assets.defs.stellar_populations.config import (
    CHECK_NAMES,
    FastModelConfig,
    PosteriorsConfig,
    StellarPopulationsConfig,
    ValidationConfig,
    check_descriptions,
)
from desi_assets.science.stellar_populations import bagpipes_fit
from desi_assets.science.stellar_populations import validation_frames as vf
from desi_assets.storage import catalog
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.tables import STELLAR_POPULATION_SAMPLES, STELLAR_POPULATIONS
from desi_assets_tests.conftest import survey_keys

#: A tiny library: builds in seconds; the statuses and wiring do not depend on its size.
TINY = StellarPopulationsConfig(model=FastModelConfig(n_models=600, n_pilot=300, n_components=8, z_step_phot=0.1),
                                posteriors=PosteriorsConfig(per_partition=1, partitions=1),
                                validation=ValidationConfig(min_galaxies=5))


@pytest.fixture(scope="module")
def lake(small_survey, tmp_path_factory):
    """Two ingested partitions with spectral_indices, the tiny model and stellar_populations of both."""
    root = tmp_path_factory.mktemp("sp")
    keys = survey_keys(small_survey)[:2][::-1]  # the bright pixel (~130 spectra) first, then the backup one
    res = make_resources(str(root / "lake"), str(small_survey)) | {"stellar_populations_config": TINY}
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as inst:
        inst.add_dynamic_partitions(coadds_partitions.name, keys)
        for k in keys:
            assert dg.materialize([coadd_ingest], partition_key=k, resources=res, instance=inst).success
            assert dg.materialize([physics], partition_key=k, resources=res, instance=inst,
                                  selection=["spectral_indices"]).success
        model = dg.materialize([stellar_population_model], resources=res, instance=inst)
        mats = {}
        for k in keys:
            r = dg.materialize([stellar_populations], partition_key=k, resources=res, instance=inst)
            mats[k] = r.asset_materializations_for_node("stellar_populations")[0].metadata
        yield {"root": str(root / "lake"), "keys": keys, "res": res, "instance": inst, "mats": mats,
               "model": model.asset_materializations_for_node("stellar_population_model")[0].metadata}


def _lh(lake) -> LakehouseResource:
    return LakehouseResource(root=lake["root"])


def test_every_target_gets_a_row_with_a_status(lake):
    lh, key = _lh(lake), lake["keys"][0]
    t = lh.read("targets", keys=[key])
    sp = lh.read("stellar_populations", keys=[key])
    assert sp.height == t.height and set(sp.columns) == set(STELLAR_POPULATIONS.schema.names)
    st = dict(zip(sp["targetid"], sp["fit_status"]))
    for tid, spectype, zwarn in t.select("targetid", "spectype", "zwarn").iter_rows():
        if spectype != "GALAXY":
            assert st[tid] == "not_galaxy"
        elif zwarn != 0:
            assert st[tid] == "zwarn"
    ok = sp.filter(pl.col("fit_status").str.starts_with("ok"))
    assert ok.height >= 5 and (ok["method"] == "fast").all() and ok["logmass_p50"].null_count() == 0
    for p in vf.TRUTH_COLUMNS:
        assert (ok[f"{p}_p2_5"] <= ok[f"{p}_p16"]).all() and (ok[f"{p}_p16"] <= ok[f"{p}_p50"]).all()
        assert (ok[f"{p}_p50"] <= ok[f"{p}_p84"]).all() and (ok[f"{p}_p84"] <= ok[f"{p}_p97_5"]).all()
    assert ok["logmass_p50"].is_between(6, 13).all() and (ok["cost_s"] > 0).all()
    skipped = sp.filter(pl.col("fit_status").is_in(["not_galaxy", "zwarn", "no_data"]))
    assert skipped.height and skipped["logmass_p50"].null_count() == skipped.height  # no numbers without a fit
    assert skipped["method"].null_count() == skipped.height and skipped["tension_flag"].null_count() == skipped.height
    meta = lake["mats"][key]
    assert meta["rows"].value == t.height and meta["fitted_ok"].value == ok.height
    assert "quenching_diagram" in meta and meta["model_version"].value == lake["model"]["model_version"].value


def test_the_model_is_reused_for_the_same_settings(lake):
    res, inst = lake["res"], lake["instance"]
    again = dg.materialize([stellar_population_model], resources=res, instance=inst)
    meta = again.asset_materializations_for_node("stellar_population_model")[0].metadata
    assert meta["reused"].value is True and meta["model_version"] == lake["model"]["model_version"]
    assert lake["model"]["reused"].value is False
    other = StellarPopulationsConfig(model=TINY.model.model_copy(update={"seed": 99}))
    assert other.model_key("1") != TINY.model_key("1")


def test_bad_input_gets_a_status_never_a_crash(lake, tmp_path):
    """A galaxy without photometry, one with negative flux and a QSO row, through the asset (layer 2 context)."""
    src, key = _lh(lake), lake["keys"][0]
    lh = LakehouseResource(root=str(tmp_path / "lake"))
    for table in ("targets", "preprocessed_spectra", "spectral_indices"):
        lh.write_partitions(table, src.read(table, keys=[key]), [key])
    lh.publish_model("stellar_population_model", Path(src.current_model("stellar_population_model")["path"]),
                     src.current_model("stellar_population_model")["version"], {})
    ok = src.read("stellar_populations", keys=[key]).filter(pl.col("fit_status") == "ok")["targetid"].to_list()
    assert len(ok) >= 3
    no_phot, negative, qso = ok[:3]
    phot = [c for c in lh.read("targets", keys=[key]).columns if c.startswith("flux_")]
    t = lh.read("targets", keys=[key]).with_columns(
        *[pl.when(pl.col("targetid") == no_phot).then(None).otherwise(pl.col(c)).alias(c) for c in phot],
        pl.when(pl.col("targetid") == qso).then(pl.lit("QSO")).otherwise(pl.col("spectype")).alias("spectype"))
    lh.write_partitions("targets", t, [key])
    pre = lh.read("preprocessed_spectra", keys=[key])
    pre = pre.with_columns(pl.when(pl.col("targetid") == negative).then(pl.col("flux").list.eval(-pl.element()))
                           .otherwise(pl.col("flux")).alias("flux"))
    lh.write_partitions("preprocessed_spectra", pre, [key])
    ctx = dg.build_asset_context(partition_key=key, instance=lake["instance"])
    stellar_populations(ctx, stellar_populations_config=TINY, lakehouse=lh)
    st = dict(lh.read("stellar_populations", keys=[key]).select("targetid", "fit_status").iter_rows())
    assert st[no_phot] == "ok_spectrum_only" and st[qso] == "not_galaxy"
    assert st[negative].startswith("bad_flux")
    assert len(st) == t.height


def _fake_fits(calls):
    def fit(inputs, settings, workers):
        calls.append((len(inputs), settings.n_live, workers))
        rng = np.random.default_rng(0)
        out = []
        for inp in inputs:
            s = np.column_stack([rng.normal(10.5, 0.1, 200), 10 ** rng.normal(0, 0.2, 200), rng.uniform(1, 3, 200),
                                 rng.uniform(0, 0.5, 200), rng.uniform(0.5, 1.5, 200)]).astype(np.float32)
            assert inp.wave.size == inp.flux.size == inp.ivar.size and inp.phot.shape == (5,)
            out.append(bagpipes_fit.BagpipesResult(inp.targetid, bagpipes_fit.percentiles_from_samples(s), s, "ok",
                                                   1.5))
        return out
    return fit


def test_posteriors_fit_the_subset_only(lake, monkeypatch):
    calls = []
    monkeypatch.setattr(bagpipes_fit, "fit_bagpipes_many", _fake_fits(calls))
    res, inst, keys = lake["res"], lake["instance"], lake["keys"]
    metas = {}
    for k in keys:
        r = dg.materialize([stellar_population_posteriors], partition_key=k, resources=res, instance=inst)
        metas[k] = r.asset_materializations_for_node("stellar_population_posteriors")[0].metadata
        assert metas[k]["subset_partitions"].value == (1 if k == keys[0] else 0)
    assert len(calls) == 1 and calls[0][0] == 1  # first registered partition, 1 galaxy
    s = _lh(lake).read("stellar_population_samples")
    assert set(s.columns) == set(STELLAR_POPULATION_SAMPLES.schema.names)
    assert s["coadd_key"].to_list() == [keys[0]] and s["n_samples"][0] == 200 and len(s["logmass_samples"][0]) == 200
    best = _lh(lake).read("stellar_populations", keys=[keys[0]]).filter(pl.col("fit_status").str.starts_with("ok"))
    assert s["targetid"][0] == best.sort("snr", descending=True, nulls_last=True)["targetid"][0]
    assert abs(s["logmass_p50"][0] - 10.5) < 0.05 and "posteriors" in metas[keys[0]]
    assert metas[keys[1]]["rows"].value == 0


def test_validation_plots_and_checks(lake, monkeypatch):
    monkeypatch.setattr(bagpipes_fit, "fit_bagpipes_many", _fake_fits([]))
    res, inst = lake["res"], lake["instance"]
    dg.materialize([stellar_population_posteriors], partition_key=lake["keys"][0], resources=res, instance=inst)
    r = dg.materialize([stellar_population_validation], resources=res, instance=inst)
    meta = r.asset_materializations_for_node("stellar_population_validation")[0].metadata
    assert meta["fast_galaxies"].value >= 5 and meta["bagpipes_galaxies"].value == 1
    for plot in ("truth_vs_p50", "coverage_histogram", "quenching_diagram"):
        assert plot in meta and Path(meta[f"{plot}_path"].value).exists()
    numbers = meta["numbers"].data["fast"]
    assert set(numbers) == set(vf.TRUTH_COLUMNS) and 0 <= numbers["logmass"]["coverage_68_all"] <= 1
    c68 = numbers["logmass"]["coverage_68"]  # above snr_min only: None (NaN) when no galaxy is that bright
    assert c68 is None or 0 <= c68 <= 1
    assert set(meta["fast_vs_bagpipes"].data["logmass"]) == {"n", "offset", "scatter"}
    evals = {e.check_name: e for e in r.get_asset_check_evaluations()}
    assert set(evals) == set(CHECK_NAMES)
    assert all(e.severity == dg.AssetCheckSeverity.WARN for e in evals.values())
    assert evals["stellar_pop_logmass_scatter"].metadata["rule"].value == check_descriptions(
        StellarPopulationsConfig())["stellar_pop_logmass_scatter"]


def test_validation_without_truth_is_a_no_op(lake, tmp_path):
    res = lake["res"] | make_resources(lake["root"], str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    r = dg.materialize([stellar_population_validation], resources=res, instance=lake["instance"])
    assert r.asset_materializations_for_node("stellar_population_validation")[0].metadata["truth_rows"].value == 0


def test_catalog_joins_the_layer(lake):
    lh, key = _lh(lake), lake["keys"][0]
    j = catalog.join_partitions(lh, [key])
    assert "stellar_populations" in j.layers_present and "stellar_populations" not in j.missing_columns
    rows = catalog.to_catalog_rows(j)
    sp = lh.read("stellar_populations", keys=[key])
    good = sp.filter(pl.col("fit_status").str.starts_with("ok"))["targetid"]
    fl = rows.filter(pl.col("targetid").is_in(good.to_list()))["catalog_flags"]
    assert not any(f & catalog.CatalogFlag.STELLAR_POP_NOT_OK for f in fl)
    assert rows["age_p50"].drop_nulls().len() == sp["age_mw_p50"].drop_nulls().len() >= good.len() > 0
    assert rows["stellar_pop_method"].drop_nulls().len() == sp["method"].drop_nulls().len()


def test_descriptions_quote_the_config():
    cfg = StellarPopulationsConfig(validation=ValidationConfig(max_logmass_scatter_dex=0.123, coverage_tol=0.07))
    d = check_descriptions(cfg)
    assert "0.123 dex" in d["stellar_pop_logmass_scatter"] and "0.68 ± 0.07" in d["stellar_pop_fast_coverage"]
    assert PosteriorsConfig(partitions=2).chosen(["a", "b", "c"], ["c", "a", "b"]) == ["a", "c"]
    assert PosteriorsConfig(partition_keys=["b"]).chosen(["a", "b"], ["a", "b"]) == ["b"]
    assert PosteriorsConfig(partitions=-1).chosen(["a", "b"], ["a", "b"]) == ["a", "b"]


def test_pit_fractions_of_a_calibrated_and_an_overconfident_posterior():
    """Truth ~ N(0, 1) with Gaussian posterior percentiles: width 1 gives the expected fractions, width 0.5 not."""
    rng = np.random.default_rng(1)
    truth = rng.normal(size=20000)
    z = {"p2_5": -1.95996, "p16": -0.99446, "p50": 0.0, "p84": 0.99446, "p97_5": 1.95996}
    for width, calibrated in ((1.0, True), (0.5, False)):
        p = {"truth": truth, **{q: np.full(truth.size, v * width) for q, v in z.items()}}
        f = vf.pit_fractions(p)
        assert np.isclose(f.sum(), 1.0)
        assert np.allclose(f, vf.PIT_EXPECTED, atol=0.01) == calibrated
    assert np.allclose(vf.compared("sfr", np.array([0.0, 10.0])), [np.log10(vf.SFR_FLOOR), 1.0])
    assert vf.compared("logmass", np.array([10.5]))[0] == 10.5


def test_tension_scores_count_the_misfit_kinds():
    flag = [True, True, False, False, None]
    kind = np.array(["frosted", "delayed_tau", "quenched", "delayed_tau", "frosted"])
    s = vf.tension_scores(flag, kind)
    assert s == {"flagged": 2, "targets": 3, "true_positives": 1, "completeness": 1 / 3, "purity": 0.5}


def test_plots_draw_from_synthetic_inputs(tmp_path):
    from desi_assets.plots_stellar_populations import (
        plot_coverage_histogram,
        plot_posterior_samples,
        plot_quenching_diagram,
        plot_truth_vs_p50,
    )

    rng = np.random.default_rng(0)
    t = rng.normal(10, 0.5, 50)
    pts = {"logmass": {"fast": {"truth": t, "p16": t - 0.1, "p50": t + 0.02, "p84": t + 0.1},
                       "bagpipes": {"truth": t[:3], "p16": t[:3] - 0.2, "p50": t[:3], "p84": t[:3] + 0.2}}}
    assert plot_truth_vs_p50(tmp_path / "a.png", pts, "t").exists()
    assert plot_coverage_histogram(tmp_path / "b.png", {"logmass": {"fast": vf.PIT_EXPECTED}}, vf.PIT_EXPECTED,
                                   vf.PIT_EDGES, "c").exists()
    assert plot_quenching_diagram(tmp_path / "c.png", rng.uniform(1, 2, 50), rng.uniform(-2, 6, 50),
                                  rng.uniform(-12, -9, 50), rng.uniform(size=50) > 0.8, "q").exists()
    assert plot_posterior_samples(tmp_path / "d.png", [{"logmass": rng.normal(10, 0.1, 100)}], ["x"], "s",
                                  [{"logmass": (9.9, 10.0, 10.1)}]).exists()


def test_the_layer_is_in_the_definitions_and_the_demo_order():
    from desi_assets.definitions import PIPELINE_STAGES, defs

    names = [j for j, _ in PIPELINE_STAGES]
    layer = ["stellar_population_model_job", "stellar_populations_job", "stellar_population_posteriors_job",
             "stellar_population_validation_job"]
    assert [names.index(j) for j in layer] == sorted(names.index(j) for j in layer)
    assert names.index("physics_job") < names.index(layer[1]) and names.index(layer[-1]) < names.index("catalog_job")
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert set(CHECK_NAMES) <= checks and "stellar_populations_config" in defs.resources
    assert dict(PIPELINE_STAGES)["stellar_populations_job"] and not dict(PIPELINE_STAGES)[layer[0]]
