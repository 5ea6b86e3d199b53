"""preprocessed_spectra: the seed's 496-bin normalised spectra for usable targets.

The asset is computed by the ``coadd_ingest`` multi-asset (``defs/ingest/assets.py``) from the
arrays just read, so a backfill never reads ``spectra`` back; materialized on its own it reads
``targets`` + ``spectra`` back (``storage.ingest.lakehouse_loader``). This module holds its spec only;
the rows are built by ``storage.ingest.preprocessed_rows`` around ``science.preprocess``.
"""

import dagster as dg

preprocessed_spectra = dg.AssetSpec(
    "preprocessed_spectra",
    deps=["raw_spectra"],
    group_name="preprocess",
    kinds={"delta", "numpy"},
    skippable=True,  # coadd_ingest records it per partition (AssetMaterialization), only for the files that landed
    description="16x binning of each arm to 496 bins, NaN/Inf -> 0, divided by median |flux|; "
                "unusable spectra (fibre status, no data, bad TARGETID, bad grid, no redrock) are excluded "
                "and counted.",
)
