"""Shared fixtures: a small mock DESI survey (written once per session) and temporary lakehouses."""

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

os.environ.setdefault("TQDM_DISABLE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DESI_REAL = SHARED_DATA / "desi-real"


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory) -> Path:
    """4 mock pixels at 10% of DESI density (~200 spectra), seed 7."""
    from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey

    root = tmp_path_factory.mktemp("survey")
    write_mock_survey(root, MockSurveyConfig(n_pixels=4, seed=7, spectra_scale=0.1))
    return root


@pytest.fixture
def survey_copy(small_survey, tmp_path) -> Path:
    """A private copy of the small survey that a test may damage."""
    dst = tmp_path / "archive"
    shutil.copytree(small_survey, dst)
    return dst


@pytest.fixture
def lakehouse_root(tmp_path) -> str:
    """An empty lakehouse root."""
    return str(tmp_path / "lakehouse")


@pytest.fixture
def instance(tmp_path):
    """A persistent Dagster instance in a temp dir (multiprocess runs need one)."""
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def survey_keys(root: Path) -> list[str]:
    """Partition keys of every coadd under root, in archive order."""
    from desi_assets.sources.archives import LocalArchive

    return [e.key for e in LocalArchive(root=str(root)).list_entries()]
