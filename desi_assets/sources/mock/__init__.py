"""Seeded, realistic mock DESI survey written in the exact DESI healpix data model (+ truth tables)."""

from desi_assets.sources.mock.survey import (MockSurveyConfig, PixelSimulation, patch_pixels, pixel_programs,
                                             plan_healpix,
                                             simulate_healpix, write_mock_survey)

__all__ = ["MockSurveyConfig", "PixelSimulation", "patch_pixels", "pixel_programs", "plan_healpix", "simulate_healpix",
           "write_mock_survey"]
