"""new_coadds_sensor: every file requested exactly once, including files that arrive during a tick."""

import shutil

import dagster as dg

from desi_assets.defs.ingest.sensors import daily_coadd_discovery, decode_cursor, new_coadds_sensor
from desi_assets.sources.archives import ArchiveEntry, LocalArchive
from desi_assets_tests.conftest import survey_keys


class ArrivingArchive(LocalArchive):
    """Lists the tree, then (as if during the tick) a new pixel lands on disk after the listing."""

    pending: str = ""

    def list_entries(self, *args, **kwargs):
        entries = super().list_entries(*args, **kwargs)
        src = __import__("pathlib").Path(self.pending)
        if self.pending and src.exists():
            shutil.move(str(src), str(__import__("pathlib").Path(self.root) / "healpix"
                                      / src.relative_to(src.parents[3])))
        return entries


def _tick(instance, archive, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"archive": archive})
    result = new_coadds_sensor(ctx)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def test_sensor_requests_each_file_once(survey_copy, instance, tmp_path):
    # hold one pixel back: it "arrives" while the first tick runs
    coadds = sorted(survey_copy.rglob("coadd-*.fits"))
    late_dir = coadds[-1].parent
    parked = tmp_path / "parked" / late_dir.relative_to(survey_copy / "healpix")
    parked.parent.mkdir(parents=True)
    shutil.move(str(late_dir), str(parked))
    archive = ArrivingArchive(root=str(survey_copy), pending=str(parked))

    first = _tick(instance, archive, None)
    requested = [r.partition_key for r in first.run_requests]
    assert len(requested) == len(coadds) - 1 and len(set(requested)) == len(requested)

    second = _tick(instance, LocalArchive(root=str(survey_copy)), first.cursor)
    late = [r.partition_key for r in second.run_requests]
    assert len(late) == 1 and late[0] not in requested  # the late file, exactly once

    third = _tick(instance, LocalArchive(root=str(survey_copy)), second.cursor)
    assert not third.run_requests and "no new coadds" in str(third.skip_reason)
    assert decode_cursor(third.cursor or second.cursor) == set(requested) | set(late)
    assert set(instance.get_dynamic_partitions("coadds")) == set(requested) | set(late)


class JunkListingArchive(LocalArchive):
    """A listing that also holds keys no coadd file can have."""

    def list_entries(self, *args, **kwargs):
        return [ArchiveEntry(key="", coadd_relpath="x.fits"), ArchiveEntry(key="../../etc", coadd_relpath="y.fits"),
                *super().list_entries(*args, **kwargs)]


def test_sensor_never_registers_junk_keys(small_survey, instance):
    result = _tick(instance, JunkListingArchive(root=str(small_survey)), None)
    assert [r.partition_key for r in result.run_requests] == survey_keys(small_survey)
    assert instance.get_dynamic_partitions("coadds") == survey_keys(small_survey)


def test_daily_schedule_registers_new_files_and_requests_each_once(survey_copy, instance):
    keys = survey_keys(survey_copy)
    instance.add_dynamic_partitions("coadds", keys[:1])  # one file known already
    archive = JunkListingArchive(root=str(survey_copy))
    ctx = dg.build_schedule_context(instance=instance, resources={"archive": archive})
    requests = daily_coadd_discovery(ctx)
    assert [r.partition_key for r in requests] == keys[1:]
    assert [r.run_key for r in requests] == [f"daily-{k}" for k in keys[1:]]
    assert instance.get_dynamic_partitions("coadds") == keys  # the junk keys are not registered
    again = daily_coadd_discovery(dg.build_schedule_context(instance=instance, resources={"archive": archive}))
    assert isinstance(again, dg.SkipReason) and f"{len(keys)} known" in again.skip_message
