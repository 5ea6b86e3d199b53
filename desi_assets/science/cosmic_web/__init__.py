"""Cosmic-web environment per galaxy: kNN surface densities, T-web class and distance to filament (pure numpy/scipy)."""

from desi_assets.science.cosmic_web.catalog import (CosmicWebParams, CosmicWebResult, cosmic_web,
                                                    cosmic_web_partitioned, survey_field, survey_mean_density)
from desi_assets.science.cosmic_web.survey_field import SurveyField

__all__ = ["CosmicWebParams", "CosmicWebResult", "SurveyField", "cosmic_web", "cosmic_web_partitioned",
           "survey_field", "survey_mean_density"]
