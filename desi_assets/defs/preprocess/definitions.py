"""The preprocess layer's asset is produced by the ingest layer's `coadd_ingest` multi-asset (one pass per file)."""

import dagster as dg

defs = dg.Definitions()
