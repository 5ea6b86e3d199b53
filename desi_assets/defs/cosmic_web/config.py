"""The cosmic-web layer's one config: `CosmicWebConfig`, a resource the asset, its checks and the sensor share.

Set it in the launchpad under ``resources: cosmic_web_config: config: ...``. Defaults come from
`science.cosmic_web.CosmicWebParams` (demo-sized: they hold for DESI BGS at z < 0.4).
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from desi_assets.science.cosmic_web import CosmicWebParams

_D = CosmicWebParams()


class CosmicWebConfig(dg.ConfigurableResource):
    """Science settings (comoving Mpc) plus the galaxy selection, plots and check thresholds of the layer."""

    cosmology: str = _D.cosmology
    knn_dv_kms: float = _D.knn_dv_kms
    tracer_zmin: float = _D.tracer_zmin
    tracer_zmax: float = _D.tracer_zmax
    cell_mpc: float = _D.cell_mpc
    smoothing_mpc: float = Field(default=_D.smoothing_mpc, description="Gaussian smoothing R_s, Mpc")
    smoothing_truncation_sigma: float = Field(default=_D.smoothing_truncation_sigma,
                                              description="the Gaussian is cut at this many R_s")
    tidal_field: str = Field(default=_D.tidal_field, description="survey: δ and T_ij once over the whole survey "
                             "(asset tidal_field, whole-lattice FFT), sampled by every partition; local: from the "
                             "pixel + buffer with compact kernels (tidal_radius_mpc)")
    tidal_radius_mpc: float | None = Field(default=_D.tidal_radius_mpc, description="local field only: T_ij from δ "
                                           "within this radius (Mpc), so that partitions equal the global run; "
                                           "unset: the whole lattice (partitions then differ)")
    lambda_th: float = Field(default=_D.lambda_th, description="T-web eigenvalue threshold λ_th")
    window_min: float = Field(default=_D.window_min, description="δ is set where the smoothed random window is "
                              "at least this")
    exclude_self: bool = Field(default=_D.exclude_self, description="a tracer's δ and λ without its own cloud")
    buffer_mpc: float = Field(default=_D.buffer_mpc, description="buffer read around each pixel, Mpc (≥ the "
                              "T-web reach: truncation·R_s + tidal radius + 2√3 cells)")
    random_density_mpc3: float = _D.random_density_mpc3
    mean_density_mpc3: float | None = Field(default=_D.mean_density_mpc3, description="survey tracer density n̄ "
                                            "(Mpc⁻³); unset: estimated from the pixel and its buffer")
    edge_nside: int = _D.edge_nside
    edge_coverage_min: float = _D.edge_coverage_min
    filament_method: str = Field(default=_D.filament_method, description="tweb or mst")
    mst_max_edge_mpc: float = _D.mst_max_edge_mpc
    mst_prune: int = _D.mst_prune
    frame_ra_deg: float | None = Field(default=None, description="grid frame: +z toward (frame_ra_deg, "
                                       "frame_dec_deg); unset: equatorial axes. Either way every partition "
                                       "uses cells of one global lattice")
    frame_dec_deg: float | None = None
    seed: int = _D.seed
    spectypes: list[str] = Field(default_factory=lambda: ["GALAXY"], description="redrock classes used as galaxies")
    require_zwarn_zero: bool = True
    rerequest_all_on_new_field: bool = Field(default=False, description="sensor: after a new tidal_field, "
                                             "re-request every known partition (the whole-lattice field moves a "
                                             "little everywhere), not only the landed pixel and its buffer")
    make_plot: bool = True
    max_edge_fraction: float = Field(default=1.0, description="check: warn above this edge fraction")
    max_invalid_fraction: float = Field(default=0.05, description="check: warn when more galaxies than this have "
                                                                  "an invalid redshift")

    def params(self) -> CosmicWebParams:
        """The science parameters (footprint at the partitions' nside 64)."""
        names = set(CosmicWebParams.__dataclass_fields__)
        return CosmicWebParams(footprint_nside=64, **{k: v for k, v in self.model_dump().items() if k in names})


def check_descriptions(config: CosmicWebConfig) -> dict[str, str]:
    """Each check's description, quoting the values it uses."""
    return {
        "cosmic_web_rows_complete":
            "Every target of the partition has exactly one cosmic_web row (none lost, none duplicated). Blocking.",
        "cosmic_web_valid_redshifts":
            f"At most {config.max_invalid_fraction:.0%} of the partition's galaxies ({', '.join(config.spectypes)}) "
            "have an invalid redshift (status invalid_redshift).",
        "cosmic_web_edge_fraction":
            f"At most {config.max_edge_fraction:.0%} of galaxies are at the edge (buffer sphere of "
            f"{config.buffer_mpc:g} Mpc leaves the footprint or {config.tracer_zmin:g} ≤ z < "
            f"{config.tracer_zmax:g}); "
            f"T-web at R_s = {config.smoothing_mpc:g} Mpc, λ_th = {config.lambda_th:g}, " + (
                "sampled from the survey-wide tidal_field." if config.tidal_field == "survey" else
                f"local field, tidal radius "
                f"{config.tidal_radius_mpc if config.tidal_radius_mpc is not None else 'unbounded'} Mpc."),
    }


def field_check_descriptions(config: CosmicWebConfig) -> dict[str, str]:
    """The tidal_field asset's check descriptions, quoting the values it uses."""
    return {
        "tidal_field_covers_tracers":
            f"The survey field (cell {config.cell_mpc:g} Mpc, R_s = {config.smoothing_mpc:g} Mpc, window ≥ "
            f"{config.window_min:g}) stores cells whenever there are tracers ({config.tracer_zmin:g} ≤ z < "
            f"{config.tracer_zmax:g}, {', '.join(config.spectypes)}); its volume fractions at λ_th = "
            f"{config.lambda_th:g} are in the metadata.",
    }
