"""Four partitions materialized concurrently (four run processes, each with the multiprocess executor) all land."""

import os
import subprocess
import sys
import textwrap

from desi_assets.defs.partitions import coadds_partitions
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets_tests.conftest import survey_keys

RUN_ONE = textwrap.dedent("""
    import sys
    import dagster as dg
    from desi_assets_tests.defs.test_concurrency import coadd_job_from_env
    with dg.DagsterInstance.get() as instance:
        with dg.execute_job(dg.reconstructable(coadd_job_from_env), instance=instance,
                            tags={"dagster/partition": sys.argv[1]}) as result:
            sys.exit(0 if result.success else 1)
""")


def coadd_job_from_env():
    """Reconstructable job: resources come from DESI_ARD_LAKEHOUSE / DESI_ARD_ARCHIVE in every process."""
    from desi_assets.definitions import build_defs

    return build_defs(os.environ["DESI_ARD_LAKEHOUSE"], os.environ["DESI_ARD_ARCHIVE"]).resolve_job_def("coadd_job")


def test_four_concurrent_multiprocess_runs_all_land(small_survey, lakehouse_root, instance):
    keys = survey_keys(small_survey)[:4]
    assert len(keys) == 4
    instance.add_dynamic_partitions(coadds_partitions.name, keys)
    env = dict(os.environ, DESI_ARD_LAKEHOUSE=lakehouse_root, DESI_ARD_ARCHIVE=str(small_survey),
               DAGSTER_HOME=instance.root_directory, OPENBLAS_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", RUN_ONE, k], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in keys]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(o[-2000:] for o in outs)
    lh = LakehouseResource(root=lakehouse_root)
    for table in ("targets", "spectra", "preprocessed_spectra"):
        assert sorted(lh.read(table, columns=["coadd_key"])["coadd_key"].unique().to_list()) == sorted(keys)
    runs = instance.get_runs()
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(keys)
