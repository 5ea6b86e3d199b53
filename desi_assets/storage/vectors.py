"""Vector store: one LanceDB table of spectrum embeddings per model version, idempotent partition writes,
measured index choice and `find_similar` with SQL-style filters."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

#: Catalogue columns stored beside the vectors (returned by find_similar).
CATALOG_COLUMNS = ["targetid", "coadd_key", "healpix", "survey", "program", "spectype", "z", "model_version"]
#: BigAE latent width (the anomaly model's bottleneck).
LATENT_DIM = 128
VECTOR = "vector"
LATENT = "bigae_latent"


def vector_schema(dim: int, latent_dim: int = LATENT_DIM) -> pa.Schema:
    """Row schema: catalogue columns, the embedding (`vector`, dim floats), the BigAE latent and reconstruction χ²."""
    return pa.schema([
        pa.field("targetid", pa.int64(), nullable=False),
        pa.field("coadd_key", pa.string(), nullable=False),
        pa.field("healpix", pa.int64()),
        pa.field("survey", pa.string()),
        pa.field("program", pa.string()),
        pa.field("spectype", pa.string()),
        pa.field("z", pa.float64()),
        pa.field("model_version", pa.string()),
        pa.field(VECTOR, pa.list_(pa.float32(), dim)),
        pa.field(LATENT, pa.list_(pa.float32(), latent_dim)),
        pa.field("recon_chi2", pa.float64()),
    ])


def lance_uri(root: str) -> str:
    """The LanceDB directory of a lakehouse root: {root}/lance (local path or object-store URI)."""
    if "://" not in root or root.startswith("file://"):
        return str(Path(root.removeprefix("file://")).resolve() / "lance")
    return f"{root.rstrip('/')}/lance"


def table_name(model_version: str) -> str:
    """LanceDB table of one embedding-model version."""
    return f"embeddings_{model_version}"


def connect(uri: str, storage_options: dict[str, str] | None = None):
    """LanceDB connection (no network calls for local paths)."""
    import lancedb

    return lancedb.connect(uri, storage_options=storage_options or None)


def fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float array -> Arrow fixed-size list column without per-row Python work."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def vector_rows(catalog: pl.DataFrame, vectors: np.ndarray, latent: np.ndarray | None, recon_chi2: np.ndarray,
                model_version: str) -> pa.Table:
    """Rows for the vector table from catalogue columns (targetid … z), embeddings (N, D), BigAE latents (N, 128)."""
    n, dim = vectors.shape
    if not np.isfinite(vectors).all():
        raise ValueError("refusing to store non-finite embedding vectors")
    cols = {c: catalog[c].to_arrow() for c in CATALOG_COLUMNS if c != "model_version"}
    cols["model_version"] = pa.array([model_version] * n, pa.string())
    cols[VECTOR] = fixed_list(vectors)
    cols[LATENT] = (fixed_list(latent) if latent is not None else
                    pa.nulls(n, pa.list_(pa.float32(), LATENT_DIM)))
    cols["recon_chi2"] = pa.array(np.asarray(recon_chi2, dtype=np.float64))
    return pa.table(cols).cast(vector_schema(dim))


def _in_list(column: str, keys: Sequence[str]) -> str:
    quoted = ", ".join("'" + k.replace("'", "''") + "'" for k in keys)
    return f"{column} IN ({quoted})"


def write_partitions(uri: str, name: str, rows: pa.Table, keys: Sequence[str],
                     storage_options: dict[str, str] | None = None, retries: int = 5) -> int:
    """Replace the rows of the given coadd_keys with `rows` in one commit (merge_insert); returns rows written.

    Re-running with the same rows leaves the table unchanged; rows of other partitions are not touched.
    """
    db = connect(uri, storage_options)
    for attempt in range(retries):
        try:
            tbl = db.create_table(name, schema=rows.schema, exist_ok=True)
            if rows.num_rows:
                (tbl.merge_insert(["coadd_key", "targetid"]).when_matched_update_all().when_not_matched_insert_all()
                 .when_not_matched_by_source_delete(_in_list("coadd_key", keys)).execute(rows, on_bad_vectors="null"))
            else:
                tbl.delete(_in_list("coadd_key", keys))
            return rows.num_rows
        except Exception:  # concurrent create or commit on the same table (parallel runs): retry
            if attempt == retries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    return rows.num_rows


def open_table(uri: str, name: str, storage_options: dict[str, str] | None = None):
    """An existing vector table, with a clear error if it was never written."""
    db = connect(uri, storage_options)
    if name not in db.list_tables().tables:
        raise FileNotFoundError(f"no vector table {name} in {uri}; materialize `spectral_embeddings` first")
    return db.open_table(name)


def read_vectors(uri: str, name: str, columns: Sequence[str] | None = None, where: str | None = None,
                 storage_options: dict[str, str] | None = None) -> pl.DataFrame:
    """Rows of a vector table (all, or those matching a SQL filter) as Polars."""
    tbl = open_table(uri, name, storage_options)
    return pl.from_arrow(_scan(tbl, columns, where))


def _scan(tbl, columns: Sequence[str] | None, where: str | None) -> pa.Table:
    """A plain (non-vector) scan of a table with a projection and an optional SQL filter."""
    q = tbl.search().limit(max(tbl.count_rows(), 1))
    if where:
        q = q.where(where)
    if columns:
        q = q.select(list(columns))
    return q.to_arrow()


@dataclass(frozen=True)
class IndexChoice:
    """An ANN index to try: LanceDB type, partitions, PQ sub-vectors, query nprobes and refine factor."""

    index_type: str = "IVF_PQ"
    num_partitions: int = 256
    num_sub_vectors: int = 16
    nprobes: int = 20
    refine_factor: int | None = 10
    m: int = 20
    ef_construction: int = 150

    def config(self, metric: str):
        """The lancedb.index config object (the `config=` form of create_index)."""
        from lancedb import index

        if self.index_type == "IVF_PQ":
            return index.IvfPq(distance_type=metric, num_partitions=self.num_partitions,
                               num_sub_vectors=self.num_sub_vectors)
        if self.index_type == "IVF_FLAT":
            return index.IvfFlat(distance_type=metric, num_partitions=self.num_partitions)
        if self.index_type == "IVF_HNSW_SQ":
            return index.HnswSq(distance_type=metric, num_partitions=self.num_partitions, m=self.m,
                                ef_construction=self.ef_construction)
        raise ValueError(f"unknown index type {self.index_type!r}")

    def label(self) -> str:
        """Short human-readable name."""
        extra = f", pq {self.num_sub_vectors}, refine {self.refine_factor}" if self.index_type == "IVF_PQ" else ""
        return f"{self.index_type}(partitions {self.num_partitions}, nprobes {self.nprobes}{extra})"


def build_index(tbl, choice: IndexChoice, column: str = VECTOR, metric: str = "cosine") -> float:
    """Build (replace) the ANN index on `column`; returns the build time (s)."""
    t0 = time.perf_counter()
    tbl.create_index(column, replace=True, config=choice.config(metric))  # the config= form: column first
    return time.perf_counter() - t0


def _query(tbl, vector: np.ndarray, k: int, column: str, metric: str, where: str | None,
           choice: IndexChoice | None, exact: bool, prefilter: bool = True):
    q = tbl.search(np.asarray(vector, dtype=np.float32), vector_column_name=column).distance_type(metric).limit(k)
    if where:
        q = q.where(where, prefilter=prefilter)
    if exact:
        q = q.bypass_vector_index()
    elif choice is not None:
        q = q.nprobes(choice.nprobes)
        if choice.refine_factor:
            q = q.refine_factor(choice.refine_factor)
    return q


def search_ids(tbl, vector: np.ndarray, k: int = 10, column: str = VECTOR, metric: str = "cosine",
               where: str | None = None, choice: IndexChoice | None = None, exact: bool = False,
               postfilter_oversample: int = 0) -> np.ndarray:
    """TARGETIDs of the k nearest rows (exact scan, or the index with the choice's nprobes/refine).

    With a filter, `postfilter_oversample` > 0 searches k × that many neighbours and filters them
    afterwards (fast for unselective filters; may return fewer than k); 0 filters first (exact count).
    """
    limit = k * postfilter_oversample if (where and postfilter_oversample) else k
    res = _query(tbl, vector, limit, column, metric, where, choice, exact,
                 prefilter=not postfilter_oversample).select(["targetid", "_distance"]).to_arrow()
    return res["targetid"].to_numpy()[:k]


@dataclass
class SearchStats:
    """recall@k against the exact scan, p50/p95 query latency (ms) over the queries."""

    recall: float
    p50_ms: float
    p95_ms: float


def measure_search(tbl, queries: np.ndarray, k: int = 10, column: str = VECTOR, metric: str = "cosine",
                   where: str | None = None, choice: IndexChoice | None = None) -> SearchStats:
    """Latency of (indexed) queries and their recall@k against a brute-force scan with the same filter."""
    lat, hits = [], 0
    for v in queries:
        exact = set(_query(tbl, v, k, column, metric, where, None, True).select(["targetid", "_distance"]).to_arrow()
                    ["targetid"].to_pylist())
        t0 = time.perf_counter()
        got = _query(tbl, v, k, column, metric, where, choice, False).select(["targetid", "_distance"]).to_arrow()
        lat.append(time.perf_counter() - t0)
        hits += len(exact & set(got["targetid"].to_pylist())) / max(len(exact), 1)
    lat_ms = np.asarray(lat) * 1e3
    return SearchStats(hits / max(len(queries), 1), float(np.percentile(lat_ms, 50)), float(np.percentile(lat_ms, 95)))


def find_similar(uri: str, name: str, query: int | np.ndarray, k: int = 10, where: str | None = None,
                 column: str = VECTOR, metric: str = "cosine", choice: IndexChoice | None = None,
                 storage_options: dict[str, str] | None = None) -> pl.DataFrame:
    """The k spectra nearest to a TARGETID's vector (itself excluded) or to a vector: targetid, distance, catalogue.

    `where` is a SQL filter on the catalogue columns, e.g. "spectype = 'GALAXY' AND z < 0.3"; distances are
    cosine distances (1 − cos) for the embeddings.
    """
    tbl = open_table(uri, name, storage_options)
    self_id = None
    if isinstance(query, (int, np.integer)):
        self_id = int(query)
        hit = _scan(tbl, [column], f"targetid = {self_id}")
        if hit.num_rows == 0:
            raise KeyError(f"TARGETID {self_id} has no vector in {name}")
        vec = np.asarray(hit[column][0].as_py(), dtype=np.float32)
        if not np.isfinite(vec).all():
            raise ValueError(f"TARGETID {self_id} has no {column} (null or non-finite)")
    else:
        vec = np.asarray(query, dtype=np.float32).reshape(-1)
    res = _query(tbl, vec, k + (self_id is not None), column, metric, where, choice, choice is None)
    out = pl.from_arrow(res.select([*CATALOG_COLUMNS, "_distance"]).to_arrow()).rename({"_distance": "distance"})
    if self_id is not None:
        out = out.filter(pl.col("targetid") != self_id)
    return out.head(k).select(["targetid", "distance", *[c for c in CATALOG_COLUMNS if c != "targetid"]])


#: Pointer names (LakehouseResource.publish_model) of the current embedding model and its index choice.
MODEL_POINTER = "embedding_model"
INDEX_POINTER = "embedding_index"


def current_table(lakehouse) -> tuple[str, str, IndexChoice | None]:
    """(LanceDB uri, table name, index choice or None) of the lakehouse's current embedding model."""
    model = lakehouse.current_model(MODEL_POINTER)
    uri, name = lance_uri(lakehouse.root), table_name(model["version"])
    choice = None
    try:
        idx = lakehouse.current_model(INDEX_POINTER)
        if idx.get("table") == name and idx.get("choice"):
            choice = IndexChoice(**idx["choice"])
    except FileNotFoundError:
        pass
    return uri, name, choice


def find_similar_in_lakehouse(lakehouse, query: int | np.ndarray, k: int = 10, where: str | None = None,
                              column: str = VECTOR) -> pl.DataFrame:
    """find_similar on the current model's table, with the index parameters its index asset measured."""
    uri, name, choice = current_table(lakehouse)
    return find_similar(uri, name, query, k, where, column=column, choice=choice,
                        storage_options=dict(lakehouse.storage_options) or None)


def read_native_spectra(lakehouse, keys: Sequence[str] | None, ids: pl.DataFrame | None = None
                        ) -> tuple[pl.DataFrame, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Catalogue (targetid … z, sorted like the arrays) and per-arm native (flux, ivar, mask) of usable spectra.

    Rows are the `preprocessed_spectra` rows of the partitions `keys` (None: all), restricted to `ids`
    (coadd_key, targetid) when given; spectype and z come from `targets`.
    """
    from desi_assets.science.wavelength import ARMS
    from desi_assets.storage.arrays import to_numpy_2d

    pre = lakehouse.read("preprocessed_spectra", keys, columns=["coadd_key", "targetid"])
    if ids is not None:
        pre = pre.join(ids.select("coadd_key", "targetid").unique(), on=["coadd_key", "targetid"], how="semi")
    cat = pre.join(lakehouse.read("targets", keys, columns=["coadd_key", "targetid", "healpix", "survey", "program",
                                                           "spectype", "z"]), on=["coadd_key", "targetid"],
                   how="left")
    cols = ["coadd_key", "targetid"] + [f"{q}_{a}" for a in ARMS for q in ("flux", "ivar", "mask")]
    use_keys = keys if keys is not None else sorted(set(cat["coadd_key"].to_list()))
    spec = lakehouse.read("spectra", use_keys, columns=cols).join(cat, on=["coadd_key", "targetid"], how="inner")
    arms = {a: (to_numpy_2d(spec[f"flux_{a}"]), to_numpy_2d(spec[f"ivar_{a}"]),
                to_numpy_2d(spec[f"mask_{a}"], np.int32)) for a in ARMS}
    return spec.select(CATALOG_COLUMNS[:-1]), arms


def balanced_ids(ids: pl.DataFrame, max_train: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, val) ids from unique training_set rows: train at most max_train (0 = all), equal per class where possible."""
    train, val = ids.filter(pl.col("split") == "train"), ids.filter(pl.col("split") == "val")
    if max_train and train.height > max_train:
        counts = dict(train.group_by("spectype").len().iter_rows())
        quota, left, take = {}, max_train, sorted(counts, key=counts.get)
        for i, c in enumerate(take):  # rarest class first; its unused share goes to the others
            quota[c] = min(counts[c], left // (len(take) - i))
            left -= quota[c]
        train = pl.concat([train.filter(pl.col("spectype") == c).sort("coadd_key", "targetid")
                           .sample(quota[c], seed=seed) for c in take])
    return train.sort("coadd_key", "targetid"), val.sort("coadd_key", "targetid")


def load_current_model(lakehouse):
    """(SpectrumTransformer in eval mode, version) of the lakehouse's published embedding model."""
    model, meta = _load_model_file(lakehouse.current_model(MODEL_POINTER)["path"])
    return model, meta["version"]


@functools.lru_cache(maxsize=4)
def _load_model_file(path: str):
    from desi_assets.science.embeddings.model import load_model

    return load_model(path)


def bigae_latents(lakehouse, keys: Sequence[str] | None, cat: pl.DataFrame) -> np.ndarray | None:
    """BigAE 128-d latents (N, 128) of the catalogue rows from their 496-bin spectra; None if no anomaly model."""
    import torch

    from desi_assets.science.anomaly.bigae import load_model
    from desi_assets.storage.arrays import to_numpy_2d

    if cat.height == 0:
        return None
    try:
        path = lakehouse.current_model("anomaly_model")["path"]
    except FileNotFoundError:
        return None
    net, _ = load_model(path)
    pre = cat.select("coadd_key", "targetid").join(
        lakehouse.read("preprocessed_spectra", keys, columns=["coadd_key", "targetid", "flux", "masked_frac"]),
        on=["coadd_key", "targetid"], how="left", maintain_order="left")
    flux, bad = to_numpy_2d(pre["flux"]), to_numpy_2d(pre["masked_frac"]) > 0
    try:  # the anomaly model is trained on spectra whose masked bins are inpainted
        from desi_assets.science.anomaly.local import inpaint_bins
        flux = inpaint_bins(flux, bad)
    except ImportError:
        pass
    with torch.inference_mode():
        return net.encode(torch.from_numpy(np.ascontiguousarray(flux, dtype=np.float32))).numpy()


def default_candidates(n: int, dim: int) -> list[IndexChoice]:
    """Indexes worth measuring for n vectors of dim floats, in the order bench/vector_search.py ranked them.

    1M × 128-d on the 2-core box (bench/vector_search.py): IVF_FLAT (1,000 partitions, nprobes 40)
    recall@10 1.00, p50 14 ms, build 129 s; IVF_PQ (16 sub-vectors, refine 10) recall 0.69, p50 21 ms,
    build 342 s. So IVF_FLAT first, PQ only with finer sub-vectors and a larger refine factor.
    """
    parts = int(np.clip(np.sqrt(n), 16, 1024))
    return [IndexChoice("IVF_FLAT", parts, nprobes=20, refine_factor=None),
            IndexChoice("IVF_FLAT", parts, nprobes=40, refine_factor=None),
            IndexChoice("IVF_PQ", parts, max(dim // 4, 1), nprobes=40, refine_factor=20)]


def choose_index(tbl, min_rows: int, target_recall: float = 0.95, n_queries: int = 50, seed: int = 0,
                 candidates: Sequence[IndexChoice] | None = None, column: str = VECTOR,
                 metric: str = "cosine") -> dict:
    """Measure candidates' recall@10 and latency on sample queries; build the fastest reaching target_recall.

    Below min_rows no index is built: the flat scan is exact, and its latency is reported.
    """
    n = tbl.count_rows()
    sample = _scan(tbl, [column], None)[column]
    rng = np.random.default_rng(seed)
    q = np.asarray(sample.take(rng.choice(n, min(n_queries, n), replace=False)).to_pylist(), dtype=np.float32)
    flat = measure_search(tbl, q, 10, column, metric)
    report = {"rows": n, "flat_p50_ms": flat.p50_ms, "flat_p95_ms": flat.p95_ms, "choice": None, "tried": []}
    if n < min_rows:
        report["decision"] = f"no index: {n} rows < index_min_rows {min_rows} (flat scan, recall 1.0)"
        return report
    candidates = candidates or default_candidates(n, q.shape[1])
    best = None
    for c in candidates:
        build = build_index(tbl, c, column, metric)
        st = measure_search(tbl, q, 10, column, metric, choice=c)
        report["tried"].append({"index": c.label(), "build_s": round(build, 2), "recall@10": round(st.recall, 4),
                                "p50_ms": round(st.p50_ms, 2), "p95_ms": round(st.p95_ms, 2)})
        if st.recall >= target_recall and (best is None or st.p50_ms < best[1]):
            best = (c, st.p50_ms)
    if best is None:
        report["decision"] = f"no candidate reached recall {target_recall}: exact scan"
        return report
    build_index(tbl, best[0], column, metric)
    report["choice"] = asdict(best[0])
    report["decision"] = f"{best[0].label()}: fastest with recall@10 >= {target_recall}"
    return report


@dataclass
class EvalInputs:
    """Aligned evaluation arrays: transformer vectors, BigAE latents, 496-bin flux; class, z, S/N; encoder-unseen; ids."""

    transformer: np.ndarray
    latent: np.ndarray | None
    flux: np.ndarray
    spectype: np.ndarray
    z: np.ndarray
    snr: np.ndarray
    unseen: np.ndarray
    ids: pl.DataFrame | None = None


def evaluation_inputs(lakehouse, uri: str, name: str, max_rows: int = 0, seed: int = 0) -> EvalInputs:
    """Redshift-good GALAXY/QSO/STAR rows of the vector table with their 496-bin flux, S/N and training status."""
    from desi_assets.storage.arrays import to_numpy_2d

    v = read_vectors(uri, name, ["coadd_key", "targetid", VECTOR, LATENT],
                     "spectype IN ('GALAXY', 'QSO', 'STAR')", dict(lakehouse.storage_options) or None)
    t = lakehouse.read("targets", columns=["coadd_key", "targetid", "spectype", "z", "zwarn", "median_coadd_snr_b",
                                           "median_coadd_snr_r", "median_coadd_snr_z"]).filter(pl.col("zwarn") == 0)
    pre = lakehouse.read("preprocessed_spectra", columns=["coadd_key", "targetid", "flux"])
    d = v.join(t, on=["coadd_key", "targetid"]).join(pre, on=["coadd_key", "targetid"]).sort("coadd_key", "targetid")
    if max_rows and d.height > max_rows:
        d = d.sample(max_rows, seed=seed).sort("coadd_key", "targetid")
    model = lakehouse.current_model(MODEL_POINTER)
    ids_path = Path(model["path"]).with_name(f"embedding_model-{model['version']}-train_ids.parquet")
    seen = pl.read_parquet(ids_path) if ids_path.exists() else d.head(0).select("coadd_key", "targetid")
    unseen = d.join(seen.select("coadd_key", "targetid").with_columns(seen=pl.lit(True)),
                    on=["coadd_key", "targetid"], how="left", maintain_order="left")["seen"].is_null().to_numpy()
    lat = d[LATENT]
    return EvalInputs(
        transformer=to_numpy_2d(d[VECTOR].cast(pl.List(pl.Float32))),
        latent=None if lat.null_count() else to_numpy_2d(lat.cast(pl.List(pl.Float32))),
        flux=to_numpy_2d(d["flux"]), spectype=d["spectype"].to_numpy().astype(str), z=d["z"].to_numpy(),
        snr=d.select(pl.mean_horizontal("median_coadd_snr_b", "median_coadd_snr_r", "median_coadd_snr_z"))
        .to_series().to_numpy(), unseen=unseen, ids=d.select("coadd_key", "targetid"))
