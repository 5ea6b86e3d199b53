"""The embedding layer's one typed config (every embedding asset reads it)."""

import dagster as dg
from pydantic import Field

from desi_assets.science.embeddings.evaluate import ProbeSettings


class EmbeddingConfig(dg.Config):
    """SpectrumTransformer training, embedding, index choice and evaluation.

    Demo-sized defaults: the `small` architecture (P = 64, width 128, 2 + 1 layers, ~490k parameters)
    on at most 3,000 class-balanced training spectra for at most 12 epochs or 140 s, the learning rate annealing
    to whichever ends first. Full size: set `arch: paper` (P = 32, 6 + 6 layers, width 512, 8 heads; for a GPU),
    `max_train_spectra: 0` (all), `epochs: 100`, `max_train_seconds: 0` (no cap).
    """

    arch: str = Field(default="small", description="'small' (CPU demo) or 'paper' (GPU)")
    pooling: str = Field(default="mean_std", description="embedding: 'mean_std' (mean and standard deviation of "
                                                         "the valid tokens' states, 2 x width floats), 'mean' or "
                                                         "'cls' (a [CLS] token's state)")
    max_train_spectra: int = Field(default=3000, description="training spectra drawn (balanced) from the "
                                                             "training_set's train split; 0 = all")
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    train_grid_shifts: int = Field(default=1, description="patch-grid shifts the training spectra are seen at, "
                                                          "one per epoch in turn (1 = the native grid only)")
    mask_ratio: float = Field(default=0.5, description="share of valid patches hidden from the encoder")
    patience: int = 4
    max_train_seconds: float = Field(default=140.0, description="wall-clock budget of training (s); the lr schedule "
                                                                   "ends with it. 0 = none")
    seed: int = 0
    device: str = Field(default="auto", description="'auto' = cuda when present, else cpu")
    num_threads: int = Field(default=0, description="torch threads for training; 0 = OMP_NUM_THREADS where set, else min(4, cores)")
    embed_batch: int = 256
    index_min_rows: int = Field(default=50_000, description="below this a flat scan is exact and fast: no index")
    index_target_recall: float = Field(default=0.95, description="recall@10 an index must reach to be chosen")
    index_queries: int = Field(default=50, description="sample queries used to measure recall and latency")
    eval_folds: int = 5
    eval_pca_dims: int = 32
    eval_max_rows: int = Field(default=0, description="evaluate at most this many spectra (0 = all)")
    eval_probe_cs: list[float] = Field(default=list(ProbeSettings().cs), description="linear-probe inverse L2 strength C; several "
                                                                  "values: a 3-fold inner CV picks one per fold")
    eval_jobs: int = Field(default=0, description="worker processes for the evaluation's fold fits; 0 = one per core")
    eval_probe_balanced: bool = Field(default=ProbeSettings().balanced, description="weight the probe's classes by inverse frequency "
                                                                "(it then optimises balanced accuracy)")
