"""new_coadds_sensor: every file requested exactly once, including files that arrive during a tick."""

import shutil

import dagster as dg

from desi_assets.defs.ingest.sensors import decode_cursor, new_coadds_sensor
from desi_assets.sources.archives import LocalArchive


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
