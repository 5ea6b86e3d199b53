"""Partitions shared by every per-coadd asset: one dynamic partition per coadd file."""

import dagster as dg

#: Keys are `{survey}-{program}-{healpix}` or `tile-{tileid}-{petal}`; filled by the discovery sensor.
coadds_partitions = dg.DynamicPartitionsDefinition(name="coadds")

#: Backfills hand each run up to this many partitions, amortising run start-up over many files.
COADD_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=25)
