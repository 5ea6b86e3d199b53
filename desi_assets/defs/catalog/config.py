"""The catalog layer's one typed config: join options and the GE gate limits the checks read and quote."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from desi_assets.storage.catalog import GATES, GateLimits, gate_descriptions


class CatalogConfig(dg.ConfigurableResource):
    """Limits of the catalog gates and of the per-layer quality flags (resource `catalog_config`)."""

    ra_range: list[float] = Field(default=[0.0, 360.0], description="allowed RA, deg")
    dec_range: list[float] = Field(default=[-90.0, 90.0], description="allowed Dec, deg")
    z_range: list[float] = Field(default=[-0.01, 7.0], description="allowed redrock z")
    dn4000_range: list[float] = Field(default=[0.0, 3.0], description="allowed Dn4000 (dimensionless)")
    vdisp_range: list[float] = Field(default=[0.0, 600.0], description="allowed VDISP, km/s")
    logmass_range: list[float] = Field(default=[6.0, 13.0], description="allowed logmass percentiles, log10(Msun)")
    web_classes: list[int] = Field(default=[0, 1, 2, 3], description="allowed web_class values")
    max_out_of_range_fraction: float = Field(
        default=0.05, description="largest fraction of a partition's measured Dn4000/VDISP/logmass outside the "
                                  "physical range (the mock demo: up to ~2% of Dn4000 > 3 from low-S/N spectra)")
    min_allowed_out_of_range: int = Field(
        default=2, description="a partition may always have this many out-of-range values (small partitions)")
    max_null_fraction: dict[str, float] = Field(
        default={"ra": 0.0, "dec": 0.0, "z": 0.01, "zwarn": 0.01, "spectype": 0.01},
        description="column -> largest allowed fraction of nulls per partition")
    masked_frac_max: float = Field(default=0.5, description="masked_frac above this sets HIGH_MASKED_FRACTION")
    snr_min: float = Field(default=1.0, description="snr_median below this sets LOW_SNR")
    make_plot: bool = Field(default=True, description="write the HEALPix sky map of the catalog per run")

    def limits(self) -> GateLimits:
        """The gate limits as the pure gate code takes them."""
        return GateLimits(ra=tuple(self.ra_range), dec=tuple(self.dec_range), z=tuple(self.z_range),
                          dn4000=tuple(self.dn4000_range), vdisp=tuple(self.vdisp_range),
                          logmass=tuple(self.logmass_range), web_classes=tuple(self.web_classes),
                          max_out_of_range_fraction=self.max_out_of_range_fraction,
                          min_allowed_out_of_range=self.min_allowed_out_of_range,
                          max_null_fraction=tuple(self.max_null_fraction.items()))


def check_descriptions(config: CatalogConfig) -> dict[str, str]:
    """Gate name -> description quoting this config's values (generated, never hand-copied)."""
    d = gate_descriptions(config.limits())
    return {g: d[g] for g in GATES}
