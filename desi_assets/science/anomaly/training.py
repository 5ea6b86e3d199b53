"""Training and batch inference for BigAE on normalised 496-bin flux (MSE in normalised flux² units)."""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from desi_assets.science.anomaly.bigae import BigAE
from desi_assets.science.torch_models import resolve_device


@dataclass
class TrainConfig:
    """Hyper-parameters of BigAE training (epochs, spectra per batch, AdamW lr/weight decay, patience in epochs).

    ``num_threads`` sets torch's intra-op threads for the run (restored afterwards). On a
    2-core machine shared with other work, 1 thread can be 5-10x faster than 2 (measured).
    CPU runs are deterministic for a given seed and thread count.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 6
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None

    def resolved_device(self) -> torch.device:
        """'auto' → cuda when available, else cpu."""
        return resolve_device(self.device)


@dataclass
class TrainResult:
    """Trained model (best val epoch, eval mode), history [(epoch, train_mse, val_mse)], best epoch (1-based), wall seconds."""

    model: BigAE
    history: list[tuple[int, float, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def _as_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Float32 contiguous tensor of x on device."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)


@torch.no_grad()
def _mse(model: nn.Module, x: torch.Tensor, w: torch.Tensor | None = None, batch_size: int = 8192) -> float:
    """Mean squared reconstruction error of x in eval mode over bins with weight w (normalised flux²)."""
    model.eval()
    total, n = 0.0, 0.0
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        wb = torch.ones_like(xb) if w is None else w[i : i + batch_size]
        total += float((wb * (model(xb) - xb) ** 2).sum(dtype=torch.float64))
        n += float(wb.sum(dtype=torch.float64))
    return total / max(n, 1.0)


def _loss_weights(left_out: np.ndarray | None, x: np.ndarray, device: torch.device) -> torch.Tensor | None:
    """1 for bins in the loss, 0 for left-out bins (None: all bins count)."""
    if left_out is None:
        return None
    left_out = np.asarray(left_out, dtype=bool)
    if left_out.shape != x.shape:
        raise ValueError(f"left-out mask shape {left_out.shape} != data shape {x.shape}")
    return _as_tensor(~left_out, device)


def train_autoencoder(
    x_train: np.ndarray,
    x_val: np.ndarray,
    config: TrainConfig | None = None,
    progress: Callable[[int, float, float], None] | None = None,
    left_out_train: np.ndarray | None = None,
    left_out_val: np.ndarray | None = None,
) -> TrainResult:
    """Train BigAE with AdamW on MSE of normalised flux (N,496); early-stop on val MSE, restore the best weights.

    ``left_out_*`` (bool, same shape as the data) mark bins left out of the MSE, e.g. bins whose
    seed-binned flux contains pipeline-masked pixels (inpaint them in ``x`` first).
    """
    config = config or TrainConfig()
    if x_train.ndim != 2 or x_val.ndim != 2:
        raise ValueError("x_train and x_val must be 2-D (N, n_bins)")
    device = config.resolved_device()
    old_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    t0 = time.perf_counter()
    try:
        cuda_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_ids):
            torch.manual_seed(config.seed)
            model = BigAE(n_bins=x_train.shape[1]).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            gen = torch.Generator().manual_seed(config.seed)
            xt = _as_tensor(x_train, device)
            xv = _as_tensor(x_val, device)
            wt = _loss_weights(left_out_train, x_train, device)
            wv = _loss_weights(left_out_val, x_val, device)
            n = xt.shape[0]
            history: list[tuple[int, float, float]] = []
            best_val, best_epoch, best_state, bad = np.inf, 0, None, 0
            for epoch in range(1, config.epochs + 1):
                model.train()
                perm = torch.randperm(n, generator=gen).to(device)
                tot, cnt = 0.0, 0
                for i in range(0, n, config.batch_size):
                    idx = perm[i : i + config.batch_size]
                    if idx.numel() < 2:  # BatchNorm needs ≥2 samples in train mode
                        continue
                    xb = xt[idx]
                    if wt is None:
                        loss = torch.mean((model(xb) - xb) ** 2)
                    else:
                        wb = wt[idx]
                        loss = torch.sum(wb * (model(xb) - xb) ** 2) / wb.sum().clamp_min(1.0)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += float(loss.detach()) * idx.numel()
                    cnt += idx.numel()
                train_mse = tot / max(cnt, 1)
                val_mse = _mse(model, xv, wv)
                history.append((epoch, train_mse, val_mse))
                if progress is not None:
                    progress(epoch, train_mse, val_mse)
                if val_mse < best_val:
                    best_val, best_epoch, bad = val_mse, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
                    if bad >= config.patience:
                        break
            if best_state is not None:
                model.load_state_dict(best_state)
            model.eval()
    finally:
        torch.set_num_threads(old_threads)
    return TrainResult(model=model, history=history, best_epoch=best_epoch, seconds=time.perf_counter() - t0)


def reconstruct(model: nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Reconstruction (N,496) float32 of normalised flux x in eval mode without grad (normalised flux units)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty_like(x)
        with torch.inference_mode(), warnings.catch_warnings():
            # x may be a read-only view of Arrow memory: torch only reads it here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            for i in range(0, x.shape[0], batch_size):
                xb = torch.from_numpy(x[i : i + batch_size]).to(device)
                out[i : i + batch_size] = model(xb).cpu().numpy()
    finally:
        model.train(was_training)
    return out

