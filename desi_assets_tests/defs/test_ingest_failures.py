"""Bad input in a batch: a poisoned file never blocks the others, Dagster's records agree with the lakehouse,
files that land unusable are flagged and recorded, an interrupted write is detectable and repaired by a rerun."""

import logging
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from astropy.io import fits
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from desi_assets.definitions import build_defs
from desi_assets.defs.partitions import coadds_partitions
from desi_assets.sources.model import QualityFlag
from desi_assets.storage import ingest
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets_tests.conftest import survey_keys

RAW, PRE = dg.AssetKey("raw_spectra"), dg.AssetKey("preprocessed_spectra")


def _edit(path: Path, fn) -> None:
    """Rewrite a FITS file with fn(hdul) applied in memory."""
    with fits.open(path) as h:
        hl = fits.HDUList([hdu.copy() for hdu in h])
    fn(hl)
    hl.writeto(path, overwrite=True)


def _cut_b_arm(hl, npix: int = 2000) -> None:
    """B arm with `npix` pixels, every B array consistent with it (the reader's shape checks all pass)."""
    hl["B_WAVELENGTH"].data = hl["B_WAVELENGTH"].data[:npix].copy()
    for what in ("FLUX", "IVAR", "MASK"):
        hl[f"B_{what}"].data = hl[f"B_{what}"].data[:, :npix].copy()
    if "B_RESOLUTION" in hl:
        hl["B_RESOLUTION"].data = hl["B_RESOLUTION"].data[:, :, :npix].copy()


def _run_range(lakehouse_root: str, archive: Path, instance, keys: list[str]) -> dg.ExecuteInProcessResult:
    """One coadd_job run over a contiguous range of partitions, as a backfill (or the CLI) runs it."""
    have = set(instance.get_dynamic_partitions(coadds_partitions.name))
    instance.add_dynamic_partitions(coadds_partitions.name, [k for k in keys if k not in have])
    job = build_defs(lakehouse_root, str(archive)).resolve_job_def("coadd_job")
    tags = ({"dagster/partition": keys[0]} if len(keys) == 1 else
            {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]})
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def _latest_rows(instance, asset_key: dg.AssetKey, key: str) -> int:
    """Row count in the latest materialization of one partition."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[key]),
                                              limit=1).records
    assert records, f"{asset_key.to_user_string()} {key} never materialized"
    return records[0].asset_materialization.metadata["rows"].value


def test_poisoned_file_lands_every_good_file_and_dagster_agrees(survey_copy, lakehouse_root, instance):
    keys = survey_keys(survey_copy)
    bad = keys[1]
    _edit(next(survey_copy.rglob(f"coadd-{bad}.fits")), _cut_b_arm)
    good = [k for k in keys if k != bad]
    lh = LakehouseResource(root=lakehouse_root)
    for attempt in (1, 2):  # a rerun behaves the same, and lands nothing twice
        result = _run_range(lakehouse_root, survey_copy, instance, keys)
        assert not result.success
        failure = result.failure_data_for_node("coadd_ingest").user_failure_data
        assert failure.metadata["failed_keys"].value == [bad] and failure.metadata["landed_keys"].value == good
        for table in ("targets", "spectra", "preprocessed_spectra"):
            landed = lh.read(table, columns=["coadd_key"])["coadd_key"]
            assert sorted(landed.unique().to_list()) == sorted(good), table
            assert landed.len() == lh.row_count(table)
        errors = lh.read("ingest_errors")
        assert errors.height == attempt and set(errors["coadd_key"]) == {bad}
        assert set(errors["error_type"]) == {"WavelengthGridError"} and "2000 pixels" in errors["message"][0]
        assert set(errors["outcome"]) == {"failed"}
        # Dagster: exactly the good partitions materialized, each with its own row count
        assert instance.get_materialized_partitions(RAW) == set(good)
        assert instance.get_materialized_partitions(PRE) == set(good)
        t = lh.read("targets")
        for k in good:
            assert _latest_rows(instance, RAW, k) == t.filter(pl.col("coadd_key") == k).height
            assert _latest_rows(instance, PRE, k) == int(t.filter((pl.col("coadd_key") == k) & pl.col("usable")).height)
    assert ingest.unmarked_keys(lh) == set()


def test_failure_after_the_read_stays_inside_the_files_boundary(survey_copy, lakehouse_root, monkeypatch):
    keys = survey_keys(survey_copy)[:3]
    real = ingest.preprocessed_rows

    def reshape_fails_for_one(keys_df, arms, usable):
        if keys_df["coadd_key"][0] == keys[0]:
            raise ValueError("cannot reshape array of size 2000 into shape (171,16)")
        return real(keys_df, arms, usable)

    monkeypatch.setattr(ingest, "preprocessed_rows", reshape_fails_for_one)
    from desi_assets.sources.archives import LocalArchive
    lh = LakehouseResource(root=lakehouse_root)
    report = ingest.ingest_batch(keys, ingest.archive_loader(LocalArchive(root=str(survey_copy))), lh)
    assert [o.key for o in report.failed] == [keys[0]] and "cannot reshape" in report.failed[0].error
    assert [o.key for o in report.good] == keys[1:]
    assert ingest.landed_keys(lh) == set(keys[1:])
    assert lh.read("ingest_errors")["message"].to_list() == ["cannot reshape array of size 2000 into shape (171,16)"]


def test_files_that_land_unusable_are_flagged_and_recorded(survey_copy, lakehouse_root, instance):
    keys = survey_keys(survey_copy)
    no_rr, wrong_rr, nm_grid, fine = keys
    next(survey_copy.rglob(f"redrock-{no_rr}.fits")).unlink()
    wrong = next(survey_copy.rglob(f"redrock-{wrong_rr}.fits"))
    wrong.write_bytes(next(survey_copy.rglob(f"redrock-{fine}.fits")).read_bytes())  # another pixel's redshifts

    def to_nm(hl):
        hl["B_WAVELENGTH"].data = hl["B_WAVELENGTH"].data / 10.0

    _edit(next(survey_copy.rglob(f"coadd-{nm_grid}.fits")), to_nm)
    result = _run_range(lakehouse_root, survey_copy, instance, keys)
    assert result.success  # every file landed (flagged), nothing lost
    assert instance.get_materialized_partitions(RAW) == set(keys)
    lh = LakehouseResource(root=lakehouse_root)
    t = lh.read("targets")
    for key, bit in ((no_rr, QualityFlag.NO_REDROCK), (wrong_rr, QualityFlag.NO_REDROCK),
                     (nm_grid, QualityFlag.NONSTANDARD_WAVELENGTH)):
        rows = t.filter(pl.col("coadd_key") == key)
        assert rows.height > 0 and not rows["usable"].any(), key
        assert ((rows["quality_flags"] & int(bit)) != 0).all() and rows["quality_reason"].str.contains(bit.name).all()
    assert t.filter(pl.col("coadd_key") == fine)["usable"].any()
    assert set(lh.read("preprocessed_spectra")["coadd_key"]) == {fine}  # unusable rows are never preprocessed
    errors = lh.read("ingest_errors").sort("coadd_key")
    assert sorted(errors["coadd_key"]) == sorted([no_rr, wrong_rr, nm_grid])
    assert set(errors["outcome"]) == {"flagged"}
    why = dict(zip(errors["coadd_key"], errors["message"]))
    assert "no redrock file" in why[no_rr] and "matches none" in why[wrong_rr] and "nm instead of" in why[nm_grid]
    logged = [e for e in instance.all_logs(result.run_id) if "nm instead of" in (e.user_message or "")]
    assert logged and logged[0].level == logging.WARNING  # a warning in the run's log, besides the flag and row
    quarantine = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW, asset_partitions=[nm_grid]), limit=1).records[0]
    assert "NONSTANDARD_WAVELENGTH" in quarantine.asset_materialization.metadata["quarantined"].value
    # the batch's example plots ride inline on the latest event of each asset, the full-size file beside them
    for asset_key in (RAW, PRE):
        latest = instance.get_latest_materialization_event(asset_key).asset_materialization.metadata
        assert "data:image/png;base64," in latest["example_plot"].value
        assert Path(latest["example_plot_path"].value).is_file()
        assert latest["batch_partitions"].value == 4 and latest["table_rows"].value == lh.row_count(
            "targets" if asset_key == RAW else "preprocessed_spectra")


def test_junk_keys_in_a_run_are_recorded(small_survey, lakehouse_root, instance):
    for junk in ("", "../../etc"):
        instance.add_dynamic_partitions(coadds_partitions.name, [junk])
        job = build_defs(lakehouse_root, str(small_survey)).resolve_job_def("coadd_job")
        assert not job.execute_in_process(instance=instance, tags={"dagster/partition": junk},
                                          raise_on_error=False).success
    errors = LakehouseResource(root=lakehouse_root).read("ingest_errors").sort("failed_at")
    assert errors["coadd_key"].to_list() == ["", "../../etc"]
    assert errors["message"].str.contains("invalid partition key").all()


def test_kill_between_table_commits_is_detected_and_repaired(small_survey, lakehouse_root, monkeypatch):
    from desi_assets.sources.archives import LocalArchive

    keys = survey_keys(small_survey)[:2]
    lh = LakehouseResource(root=lakehouse_root)
    load = ingest.archive_loader(LocalArchive(root=str(small_survey)))
    real = LakehouseResource.write_partitions
    written: list[str] = []

    def killed_before_targets(self, name, data, partition_keys):
        if name == "targets":
            raise KeyboardInterrupt  # the process dies between the per-table commits
        written.append(name)
        return real(self, name, data, partition_keys)

    monkeypatch.setattr(LakehouseResource, "write_partitions", killed_before_targets)
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_batch(keys, load, lh)
    assert written == ["spectra", "preprocessed_spectra"]  # targets is committed last: the marker
    assert ingest.landed_keys(lh) == set() and ingest.unmarked_keys(lh) == set(keys)
    with pytest.raises(LookupError, match="not in `targets`"):  # readers do not take an unmarked key as landed
        ingest.lakehouse_loader(lh)(keys[0])
    monkeypatch.setattr(LakehouseResource, "write_partitions", real)
    report = ingest.ingest_batch(ingest.unmarked_keys(lh), load, lh)  # the rerun repairs it
    assert not report.failed and ingest.unmarked_keys(lh) == set() and ingest.landed_keys(lh) == set(keys)
    n = lh.row_count("targets")
    assert lh.row_count("spectra") == n == lh.read("targets")["targetid"].len()


def test_hpxgroup_is_one_answer_per_key(tmp_path):
    from desi_assets.sources.keys import TILE_HPXGROUP, key_hpxgroup
    from desi_assets.sources.model import CoaddFile

    tile = CoaddFile(path="x", kind="tile", coadd_key="tile-80613-4", survey=None, program=None, healpix=None,
                     targets=pl.DataFrame({"healpix": [11400, 11499], "targetid": [1, 2]}), arms={})
    assert ingest.key_columns(tile)["hpxgroup"].to_list() == [TILE_HPXGROUP] * 2
    assert ingest.ingest_error_row("tile-80613-4", "x", "E", "m")["hpxgroup"].to_list() == [TILE_HPXGROUP]
    assert ingest.ingest_error_row("main-dark-10378", "x", "E", "m")["hpxgroup"].to_list() == [103]
    assert key_hpxgroup("main-dark-10378") == 103 and key_hpxgroup("") == TILE_HPXGROUP
    assert np.int32(TILE_HPXGROUP) == -1
