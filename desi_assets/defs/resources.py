"""Resource construction: the lakehouse and the spectra archive, chosen by config or environment."""

from __future__ import annotations

import os
from desi_assets.sources.archives import HttpArchive, LocalArchive, MockArchive, SpectraArchive
from desi_assets.storage.lakehouse import LakehouseResource, default_root, local_state_dir


def make_archive(spec: str | None, lakehouse_root: str) -> SpectraArchive:
    """Archive from a spec: 'mock' (default), 'mock:N' pixels, a local DESI tree path, or an http(s) URL."""
    spec = spec or os.environ.get("DESI_ARD_ARCHIVE", "mock")
    if spec == "mock" or spec.startswith("mock:"):
        n = int(spec.split(":", 1)[1]) if ":" in spec else 12
        return MockArchive(root=str(local_state_dir(lakehouse_root) / "archive"), n_pixels=n)
    if spec.startswith(("http://", "https://")):
        return HttpArchive(base_url=spec, cache_dir=str(local_state_dir(lakehouse_root) / "cache"))
    return LocalArchive(root=spec)


def make_resources(lakehouse_root: str | None = None, archive: str | None = None) -> dict:
    """The resources dict every Definitions object and test uses."""
    root = lakehouse_root or default_root()
    return {"lakehouse": LakehouseResource(root=root), "archive": make_archive(archive, root)}
