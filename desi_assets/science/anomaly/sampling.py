"""Class-balanced training samples with a leak-free train/val split, and content fingerprints of what was sampled."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl

CLASSES = ("GALAXY", "QSO", "STAR")
#: Fewest spectra per class a balanced sample needs.
MIN_PER_CLASS = 10


def balanced_sample(ids: pl.DataFrame, per_class: int, val_fraction: float, seed: int,
                    upsample: bool = True) -> pl.DataFrame:
    """Equal numbers per class (rows of ids: coadd_key, targetid, spectype, …) with a per-spectrum train/val split.

    Val: the same number of unique spectra of each class (the rarest class's val count).
    Train: ``min(per_class, largest class)`` per class when ``upsample`` (rarer classes drawn with
    replacement), else ``min(per_class, rarest class)`` without replacement. Raises ValueError when a
    class has fewer than MIN_PER_CLASS spectra.
    """
    counts = {c: ids.filter(pl.col("spectype") == c).height for c in CLASSES}
    if min(counts.values()) < MIN_PER_CLASS:
        raise ValueError(f"too few spectra for a balanced training set: {counts} (need >= {MIN_PER_CLASS} per class)")
    rng = np.random.default_rng(seed)
    by_class = {}
    for c in CLASSES:
        d = ids.filter(pl.col("spectype") == c).sort("coadd_key", "targetid")
        split = np.where(rng.random(d.height) < val_fraction, "val", "train")
        by_class[c] = d.with_columns(split=pl.Series(split))
    n_val = min(int((d["split"] == "val").sum()) for d in by_class.values())
    train_counts = [int((d["split"] == "train").sum()) for d in by_class.values()]
    n_train = min(per_class, max(train_counts) if upsample else min(train_counts))
    parts = []
    for i, (c, d) in enumerate(by_class.items()):
        tr, va = d.filter(pl.col("split") == "train"), d.filter(pl.col("split") == "val")
        parts.append(va.sample(n_val, seed=seed + i))
        parts.append(tr.sample(n_train, with_replacement=tr.height < n_train, seed=seed + i))
    return pl.concat(parts)


def content_hash(arrays: dict[str, np.ndarray], extra: dict | None = None, chars: int = 16) -> str:
    """Short sha256 (hex) of named arrays (dtype, shape and bytes, in name order) plus canonical JSON of extra."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        if a.dtype.kind in "OUS":  # strings: one per line
            a = np.frombuffer("\n".join(map(str, a.ravel())).encode(), dtype=np.uint8)
        a = np.ascontiguousarray(a)
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    h.update(json.dumps(extra or {}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:chars]
