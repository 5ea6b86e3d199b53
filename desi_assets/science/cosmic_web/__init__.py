"""Cosmic-web environment per galaxy: kNN surface densities, T-web class and distance to filament (pure numpy/scipy)."""

from desi_assets.science.cosmic_web.catalog import (CosmicWebParams, CosmicWebResult, cosmic_web,
                                                    cosmic_web_partitioned, survey_mean_density)

__all__ = ["CosmicWebParams", "CosmicWebResult", "cosmic_web", "cosmic_web_partitioned", "survey_mean_density"]
