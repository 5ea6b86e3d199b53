"""plot_metadata / png_markdown: a small inline PNG (Markdown data: URI) beside the full-size file's path."""

import base64
import io
import re

import dagster as dg
import numpy as np
from PIL import Image

from desi_assets.defs.metadata import plot_metadata
from desi_assets.plots import png_markdown

DATA_URI = re.compile(r"^!\[(?P<alt>[^\]]*)\]\(data:image/png;base64,(?P<data>[A-Za-z0-9+/=]+)\)$")


def _png(path, w=1200, h=500):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_png_markdown_is_a_downsized_data_uri_image(tmp_path):
    md = png_markdown(_png(tmp_path / "big.png"), width_px=300, title="a [b]")
    m = DATA_URI.match(md)
    assert m, md[:80]
    assert m["alt"] == "a (b)"  # brackets would end the alt text
    with Image.open(io.BytesIO(base64.b64decode(m["data"]))) as img:
        assert img.size == (300, 125) and img.mode == "P"  # palette PNG, aspect kept


def test_small_png_keeps_its_size(tmp_path):
    m = DATA_URI.match(png_markdown(_png(tmp_path / "s.png", 200, 100)))
    with Image.open(io.BytesIO(base64.b64decode(m["data"]))) as img:
        assert img.size == (200, 100)


def test_plot_metadata_gives_markdown_and_path(tmp_path):
    png = _png(tmp_path / "p.png")
    meta = plot_metadata(png, "gallery")
    assert set(meta) == {"gallery", "gallery_path"}
    assert isinstance(meta["gallery"], dg.MarkdownMetadataValue) and DATA_URI.match(meta["gallery"].value)
    assert meta["gallery_path"].value == str(png)
    assert plot_metadata(None) == {} and plot_metadata(tmp_path / "absent.png") == {}
