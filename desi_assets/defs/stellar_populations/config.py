"""The stellar-population layer's one config source: `StellarPopulationsConfig`, a resource assets and checks share.

Set it in the launchpad under ``resources: stellar_populations_config: config: ...`` (sections ``model``,
``posteriors``, ``validation``). Demo-sized defaults; check descriptions are generated from the same values.
Full size: ``posteriors: {per_partition: 20, partitions: -1}`` (the model's defaults are full size).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import dagster as dg
from pydantic import Field

from desi_assets.science.stellar_populations.fast import FastSettings


class FastModelConfig(dg.Config):
    """The fast path's model library (science.stellar_populations.fast.FastSettings; the rest keep its defaults)."""

    n_models: int = Field(default=FastSettings.n_models, description="library models drawn from the prior")
    n_pilot: int = Field(default=FastSettings.n_pilot, description="models the PCA basis is learnt from")
    n_components: int = Field(default=FastSettings.n_components, description="PCA components of the spectra")
    z_step_phot: float = Field(default=FastSettings.z_step_phot, description="redshift step of the photometry table")
    seed: int = Field(default=FastSettings.seed, description="library draw seed")
    prior: str = Field(default=FastSettings.prior, description="library prior: 'population' (formation epochs "
                                                               "uniform in cosmic time + young bursts, exponential A_V) "
                                                               "or 'broad' (log-uniform tstart, uniform A_V)")
    spec_floor: float = Field(default=FastSettings.spec_floor, description="fractional model-error floor, spectrum")
    phot_floor: float = Field(default=FastSettings.phot_floor, description="fractional model-error floor, photometry")
    temperature: float = Field(default=FastSettings.temperature, description="χ² → weight temperature T")

    def settings(self) -> FastSettings:
        """The science-side settings these values stand for."""
        return dataclasses.replace(FastSettings(), **self.model_dump())


class PosteriorsConfig(dg.Config):
    """The Bagpipes priority subset: how many galaxies, in which partitions, and the sampler settings."""

    per_partition: int = Field(default=1, description="brightest galaxies (by S/N) fitted per partition")
    partitions: int = Field(default=2, description="fit only the first N registered coadd partitions (-1: all); "
                                                   "the others are left as they are. Demo: 2 galaxies in all")
    partition_keys: list[str] = Field(default_factory=list, description="explicit partition keys to fit (overrides "
                                                              "`partitions` when not empty)")
    n_live: int = Field(default=100, description="nautilus live points")
    bin_factor: int = Field(default=8, description="native 0.8 Å pixels averaged into one fitted bin")
    use_photometry: bool = Field(default=True, description="fit FIBERMAP g, r, z, W1, W2 with the spectrum")
    timeout_s: float = Field(default=90.0, description="per-fit limit, s: the sampler stops, fit_status timeout "
                                                       "(keeps the demo stage near 2 min)")
    workers: int = Field(default=0, description="Bagpipes worker processes; 0: one per core (at most one per fit)")
    nebular: bool = Field(default=False, description="bagpipes' nebular model (lines + continuum at fitted log U); "
                                                     "off for the mock, whose 13 Gaussian lines have no continuum; "
                                                     "turn on for real data")
    spec_error_floor: float = Field(default=0.0, description="fractional model-error floor on each spectral bin "
                                                            "(× running median |flux|); 0.06 (the fast path's) "
                                                            "widened logmass/zmet intervals on the mock, not dust/SFR")

    def settings(self):
        """The science-side BagpipesSettings."""
        from desi_assets.science.stellar_populations.bagpipes_fit import BagpipesSettings

        return BagpipesSettings(n_live=self.n_live, bin_factor=self.bin_factor, use_photometry=self.use_photometry,
                                timeout_s=self.timeout_s, nebular=self.nebular, spec_error_floor=self.spec_error_floor)

    def worker_count(self, n_fits: int) -> int:
        """Worker processes for n_fits fits: the configured number, else one per core, never more than fits."""
        return max(1, min(n_fits, self.workers or os.cpu_count() or 1))

    def chosen(self, run_keys: list[str], registered: list[str]) -> list[str]:
        """The run's partitions that are in the subset (explicit keys, else the first N registered)."""
        subset = set(self.partition_keys) if self.partition_keys else set(registered if self.partitions < 0 else
                                                       registered[: self.partitions])
        return [k for k in run_keys if k in subset]


class ValidationConfig(dg.Config):
    """Targets of the validation against the mock truth (the asset checks read and quote these)."""

    snr_min: float = Field(default=10.0, description="continuum S/N per 0.8 Å pixel (the table's snr) above which "
                                                     "bias, scatter and coverage are judged")
    snr_edges: list[float] = Field(default=[0.0, 3.0, 5.0, 10.0, 20.0, 1e9], description="S/N bins of the curves")
    max_logmass_scatter_dex: float = Field(default=0.15, description="logmass p50 − truth robust scatter, dex")
    max_logmass_bias_dex: float = Field(default=0.05, description="|median logmass p50 − truth|, dex")
    max_age_scatter_dex: float = Field(default=0.2, description="log age_mw p50 − truth robust scatter, dex")
    coverage_target: float = Field(default=0.68, description="fraction of truths inside [p16, p84]")
    coverage_tol: float = Field(default=0.05, description="allowed |coverage − target| for every parameter")
    min_galaxies: int = Field(default=20, description="fewer galaxies than this (above snr_min) fail the check")


class StellarPopulationsConfig(dg.ConfigurableResource):
    """Every setting of the stellar-population layer: the fast model, the Bagpipes subset, the validation targets."""

    model: FastModelConfig = Field(default_factory=FastModelConfig)
    posteriors: PosteriorsConfig = Field(default_factory=PosteriorsConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    tension_nsigma: float = Field(default=3.0, description="tension flag: |log age_fit − log age_index| above this "
                                                            "many combined σ, index errors included (fast.tension_flag)")
    tension_max_locus_distance: float | None = Field(
        default=None, description="also flag indices farther than this (0.05 in Dn4000, 1 Å in HδA units) from every "
                                  "library model; null: age test only")
    make_plot: bool = Field(default=True, description="write the metadata PNGs")

    def model_key(self, code_version: str) -> str:
        """Hash of what determines the fast model: its settings and the code version."""
        blob = json.dumps({"settings": dataclasses.asdict(self.model.settings()), "code": code_version},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: The asset checks of stellar_population_validation (non-blocking, WARN).
CHECK_NAMES = ("stellar_pop_logmass_scatter", "stellar_pop_logmass_bias", "stellar_pop_age_scatter",
               "stellar_pop_fast_coverage")


def check_descriptions(config: StellarPopulationsConfig) -> dict[str, str]:
    """Each check's description, quoting the thresholds it uses from `config` (generated, never hand-copied)."""
    v = config.validation
    snr = f"fast path against the mock truth at S/N per pixel > {v.snr_min:g} (at least {v.min_galaxies} galaxies)"
    return {
        "stellar_pop_logmass_scatter": f"logmass: robust scatter (1.4826 MAD) of p50 − truth ≤ "
                                       f"{v.max_logmass_scatter_dex:g} dex, {snr}.",
        "stellar_pop_logmass_bias": f"logmass: |median(p50 − truth)| ≤ {v.max_logmass_bias_dex:g} dex, {snr}.",
        "stellar_pop_age_scatter": f"mass-weighted age: robust scatter of log10 p50 − log10 truth ≤ "
                                   f"{v.max_age_scatter_dex:g} dex, {snr}.",
        "stellar_pop_fast_coverage": f"fast-path calibration: the fraction of truths inside [p16, p84] is within "
                                     f"{v.coverage_target:g} ± {v.coverage_tol:g} for every parameter (logmass, sfr, "
                                     f"age_mw, dust_av, zmet), {snr}; the all-S/N coverage is reported beside it.",
    }
