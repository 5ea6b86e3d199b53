"""Masked-reconstruction training of SpectrumTransformer, batch inference (embeddings, reconstruction χ²), and the
supervised ceiling (the same encoder trained end to end on class and redshift)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from desi_assets.science.embeddings.model import ArchConfig, SpectrumTransformer, compact_index, reconstruction_loss, \
    take_columns, token_tensors
from desi_assets.science.embeddings.tokens import Tokens
from desi_assets.science.torch_models import resolve_device, torch_threads


@dataclass
class TrainSettings:
    """Training: epochs, spectra per batch, AdamW lr/weight decay, masked share of valid patches, early-stop patience
    (epochs), a wall-clock cap (s), seed, device ('auto' = GPU when present) and torch threads (None = unchanged)."""

    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    mask_ratio: float = 0.5
    patience: int = 4
    max_seconds: float = 140.0
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None

    def resolved_device(self) -> torch.device:
        """'auto' → cuda when available, else cpu."""
        return resolve_device(self.device)


@dataclass
class TrainResult:
    """Best-val model (eval mode, CPU), history [(epoch, train loss, val loss)], best epoch (1-based), wall seconds."""

    model: SpectrumTransformer
    history: list[tuple[int, float, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    stopped_by_time: bool = False


class BudgetSchedule:
    """One-cycle learning rate over whichever ends first, the planned steps or a wall-clock budget (s).

    Linear warm-up from lr/div over the first `warmup` share of the run, then a cosine to lr/final_div, where the
    run's progress is max(step / total_steps, elapsed / (max_seconds − reserve)). A time-capped run so still
    anneals fully, and `done` turns true when it should stop; `reserve` (s) keeps time for a final evaluation.
    """

    def __init__(self, opt: torch.optim.Optimizer, max_lr: float, total_steps: int, max_seconds: float = np.inf,
                 warmup: float = 0.1, div: float = 25.0, final_div: float = 1e4,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.opt, self.max_lr, self.total = opt, max_lr, max(int(total_steps), 1)
        self.max_seconds, self.warmup, self.div, self.final_div = max_seconds, warmup, div, final_div
        self.clock, self.t0, self.steps, self.reserve = clock, clock(), 0, 0.0
        self._set(self.lr_at(0.0))

    def progress(self) -> float:
        """Share of the run done, 0–1: by steps or by the wall-clock budget, whichever is further."""
        by_time = (self.clock() - self.t0) / max(self.max_seconds - self.reserve, 1e-9)
        return min(1.0, max(self.steps / self.total, by_time))

    def lr_at(self, p: float) -> float:
        """Learning rate at progress p (0–1)."""
        lo, end = self.max_lr / self.div, self.max_lr / self.final_div
        if p < self.warmup:
            return lo + (self.max_lr - lo) * p / self.warmup
        q = (p - self.warmup) / max(1.0 - self.warmup, 1e-9)
        return end + (self.max_lr - end) * 0.5 * (1.0 + np.cos(np.pi * min(q, 1.0)))

    @property
    def done(self) -> bool:
        """True once the steps or the time budget are used up."""
        return self.progress() >= 1.0

    @property
    def by_time(self) -> bool:
        """True when the time budget, not the step count, ended the run."""
        return self.steps < self.total and self.done

    def step(self) -> None:
        """Count one optimiser step and set the next step's learning rate."""
        self.steps += 1
        self._set(self.lr_at(self.progress()))

    def _set(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr


def random_patch_mask(valid: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Hide about `ratio` of each row's valid patches (N, T) bool; at least one valid patch stays visible."""
    score = torch.rand(valid.shape, generator=gen).to(valid.device)
    score = torch.where(valid, score, torch.full_like(score, 2.0))
    n_hide = (valid.sum(1, keepdim=True).float() * ratio).floor().clamp(max=(valid.sum(1, keepdim=True) - 1).float())
    rank = score.argsort(1).argsort(1)
    return valid & (rank < n_hide)


def _hidden_terms(model, b: dict[str, torch.Tensor], hidden: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prediction, flux, ivar, counted-pixel mask), each (N, H, P), at the hidden patches only: the encoder sees
    the other valid patches and the decoder is queried at the hidden ones (MAE-style; the loss counts no other)."""
    h, pad = model.encode_tokens(b["flux"], b["good"], b["wfeat"], b["valid"] & ~hidden)
    idx, qpad = compact_index(~hidden)
    pred = model.decode(h, pad, take_columns(b["wfeat"], idx), qpad)
    m = take_columns(b["good"], idx) & ~qpad.unsqueeze(-1)
    return pred, take_columns(b["flux"], idx), take_columns(b["ivar"], idx), m


def _masked_loss(model, b: dict[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
    """Reconstruction loss over the good pixels of the hidden patches, encoder seeing the other valid patches."""
    pred, flux, ivar, m = _hidden_terms(model, b, hidden)
    return reconstruction_loss(pred, flux, ivar, m)


def _batch(t: dict[str, torch.Tensor], idx: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    out = {k: v[idx].to(device) for k, v in t.items() if k != "wfeat"}
    wf = t["wfeat"]
    out["wfeat"] = (wf if wf.ndim == 2 else wf[idx]).to(device)
    return out


def _only_ok(tok: Tokens) -> Tokens:
    return tok.rows(tok.ok)


def train_embedder(train: Tokens | Sequence[Tokens], val: Tokens, arch: ArchConfig,
                   settings: TrainSettings | None = None,
                   progress: Callable[[int, float, float], None] | None = None) -> TrainResult:
    """Train on the masked-reconstruction loss (normalised χ² per pixel); keep the epoch with the lowest val loss.

    train: the training spectra's Tokens, or several views of them (e.g. on shifted patch grids), used in turn,
    one per epoch; val: on the native grid.
    """
    s = settings or TrainSettings()
    device = s.resolved_device()
    t0 = time.perf_counter()
    views = [train] if isinstance(train, Tokens) else list(train)
    with torch_threads(s.num_threads):
        torch.manual_seed(s.seed)
        model = SpectrumTransformer(arch).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        tts, tv = [token_tensors(_only_ok(v), arch) for v in views], token_tensors(_only_ok(val), arch)
        gen = torch.Generator().manual_seed(s.seed)
        val_hidden = random_patch_mask(tv["valid"], s.mask_ratio, torch.Generator().manual_seed(s.seed + 1))
        steps = sum(-(-tts[(e - 1) % len(tts)]["flux"].shape[0] // s.batch_size) for e in range(1, s.epochs + 1))
        sched = BudgetSchedule(opt, s.lr, steps, s.max_seconds)
        history, best, best_epoch, best_state, stale = [], np.inf, 0, None, 0
        for epoch in range(1, s.epochs + 1):
            model.train()
            tt = tts[(epoch - 1) % len(tts)]
            n = tt["flux"].shape[0]
            perm = torch.randperm(n, generator=gen)
            tot, cnt = 0.0, 0
            for i in range(0, n, s.batch_size):
                idx = perm[i:i + s.batch_size]
                b = _batch(tt, idx, device)
                loss = _masked_loss(model, b, random_patch_mask(b["valid"], s.mask_ratio, gen))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                tot += float(loss.detach()) * len(idx)
                cnt += len(idx)
                if sched.done:  # the time budget can end an epoch early: the lr has annealed by then
                    break
            t_val = time.perf_counter()
            val_loss = _eval_loss(model, tv, val_hidden, s.batch_size * 4, device)
            sched.reserve = time.perf_counter() - t_val  # keep time for the last validation pass
            history.append((epoch, tot / max(cnt, 1), val_loss))
            if progress:
                progress(epoch, tot / max(cnt, 1), val_loss)
            if val_loss < best:
                best, best_epoch, stale, best_state = val_loss, epoch, 0, copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= s.patience:
                    break
            if sched.done:
                break
        by_time = sched.by_time
        if best_state is not None:
            model.load_state_dict(best_state)
        model.cpu().eval()
    return TrainResult(model, history, best_epoch, time.perf_counter() - t0, by_time)


@torch.no_grad()
def _eval_loss(model, t, hidden, batch_size, device) -> float:
    model.eval()
    tot, cnt = 0.0, 0.0
    n = t["flux"].shape[0]
    for i in range(0, n, batch_size):
        idx = torch.arange(i, min(n, i + batch_size))
        b = _batch(t, idx, device)
        pred, flux, ivar, m = _hidden_terms(model, b, hidden[idx].to(device))
        m = m.float()
        tot += float((m * (flux - pred) ** 2 * ivar).sum())
        cnt += float(m.sum())
    return tot / max(cnt, 1.0)


@torch.no_grad()
def embed_tokens(model: SpectrumTransformer, tok: Tokens, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, embedding_dim) float32, reduced χ² of the full reconstruction (N,)); refused rows get zeros and NaN.

    Only rows with ``tok.ok`` carry an embedding: callers store those and report ``tok.reasons()`` for the rest.
    """
    model.eval()
    device = next(model.parameters()).device
    n, d = tok.flux.shape[0], model.cfg.embedding_dim
    vec = np.zeros((n, d), np.float32)
    chi2 = np.full(n, np.nan)
    ok = np.flatnonzero(tok.ok)
    t = token_tensors(tok, model.cfg)
    for i in range(0, ok.size, batch_size):
        idx = torch.from_numpy(ok[i:i + batch_size])
        b = _batch(t, idx, device)
        pred, emb = model(b["flux"], b["good"], b["wfeat"], b["valid"])
        m = b["good"].float()
        r = (m * (b["flux"] - pred) ** 2 * b["ivar"]).sum((1, 2)) / m.sum((1, 2)).clamp_min(1.0)
        vec[idx.numpy()] = emb.float().cpu().numpy()
        chi2[idx.numpy()] = r.double().cpu().numpy()
    return vec, chi2


def embed_arms(model: SpectrumTransformer, arms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
               block: int = 512, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings (N, embedding_dim), reconstruction χ² (N,), refusal codes (N,)) of DESI per-arm (flux, ivar, mask) rows."""
    from desi_assets.science.embeddings.tokens import tokenize_desi

    n = next(iter(arms.values()))[0].shape[0]
    if n == 0:
        return np.zeros((0, model.cfg.embedding_dim), np.float32), np.zeros(0), np.zeros(0, np.int8)

    def one(rows: slice):
        tok = tokenize_desi({a: tuple(x[rows] for x in v) for a, v in arms.items()}, model.cfg.patch)
        vec, chi2 = embed_tokens(model, tok, batch_size)
        return vec, chi2, tok.refused

    parts = [one(slice(s, min(n, s + block))) for s in range(0, n, block)]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


class SupervisedHeads(torch.nn.Module):
    """Heads on the pooled embedding: linear class logits and a small MLP for log(1 + z)."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.cls = torch.nn.Linear(dim, n_classes)
        self.z = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (N, C), log(1 + z) (N,))."""
        return self.cls(emb), self.z(emb)[:, 0]


@dataclass
class SupervisedResult:
    """Encoder and heads after end-to-end training (eval mode, CPU), history [(epoch, train loss)], wall seconds."""

    model: SpectrumTransformer
    heads: SupervisedHeads
    history: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by_time: bool = False


def _embed(model: SpectrumTransformer, b: dict[str, torch.Tensor]) -> torch.Tensor:
    h, pad = model.encode_tokens(b["flux"], b["good"], b["wfeat"], b["valid"])
    return model.pool(h, pad)


def train_supervised(tok: Tokens, labels: np.ndarray, z: np.ndarray, arch: ArchConfig,
                     settings: TrainSettings | None = None, n_classes: int | None = None, z_weight: float = 10.0,
                     huber_delta: float = 0.05, progress: Callable[[int, float], None] | None = None
                     ) -> SupervisedResult:
    """The ceiling of the architecture: encoder + heads trained on the labels (class-weighted cross-entropy plus
    z_weight × Huber on log(1 + z)), every valid patch visible. labels: class codes (N,) int; z: redshift (N,)."""
    s = settings or TrainSettings()
    device = s.resolved_device()
    t0 = time.perf_counter()
    with torch_threads(s.num_threads):
        torch.manual_seed(s.seed)
        ok = tok.ok
        tt = token_tensors(_only_ok(tok), arch)
        y = torch.from_numpy(np.asarray(labels)[ok].astype(np.int64))
        lz = torch.from_numpy(np.log1p(np.asarray(z, dtype=np.float64)[ok])).float()
        k = int(n_classes or int(y.max()) + 1)
        freq = torch.bincount(y, minlength=k).float().clamp_min(1.0)
        weight = (freq.sum() / (k * freq)).to(device)
        model, heads = SpectrumTransformer(arch).to(device), SupervisedHeads(arch.embedding_dim, k).to(device)
        params = list(model.parameters()) + list(heads.parameters())
        opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        n = len(y)
        sched = BudgetSchedule(opt, s.lr, s.epochs * -(-n // s.batch_size), s.max_seconds)
        gen, history = torch.Generator().manual_seed(s.seed), []
        for epoch in range(1, s.epochs + 1):
            model.train()
            heads.train()
            perm, tot, cnt = torch.randperm(n, generator=gen), 0.0, 0
            for i in range(0, n, s.batch_size):
                idx = perm[i:i + s.batch_size]
                logits, pz = heads(_embed(model, _batch(tt, idx, device)))
                loss = torch.nn.functional.cross_entropy(logits, y[idx].to(device), weight=weight) + \
                    z_weight * torch.nn.functional.huber_loss(pz, lz[idx].to(device), delta=huber_delta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                tot += float(loss.detach()) * len(idx)
                cnt += len(idx)
                if sched.done:
                    break
            history.append((epoch, tot / max(cnt, 1)))
            if progress:
                progress(epoch, tot / max(cnt, 1))
            if sched.done:
                break
        by_time = sched.by_time
        model.cpu().eval()
        heads.cpu().eval()
    return SupervisedResult(model, heads, history, time.perf_counter() - t0, by_time)


@torch.no_grad()
def predict_supervised(result: SupervisedResult, tok: Tokens, batch_size: int = 256
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class code (N,) int, −1 when refused; redshift (N,), NaN when refused; embedding (N, embedding_dim), 0 when refused)
    from a supervised result, in one encoder pass."""
    n = tok.flux.shape[0]
    code, z = np.full(n, -1, np.int64), np.full(n, np.nan)
    vec = np.zeros((n, result.model.cfg.embedding_dim), np.float32)
    ok = np.flatnonzero(tok.ok)
    t = token_tensors(tok, result.model.cfg)
    for i in range(0, ok.size, batch_size):
        idx = torch.from_numpy(ok[i:i + batch_size])
        emb = _embed(result.model, _batch(t, idx, "cpu"))
        logits, lz = result.heads(emb)
        code[idx.numpy()] = logits.argmax(1).numpy()
        z[idx.numpy()] = np.expm1(lz.double().numpy())
        vec[idx.numpy()] = emb.float().numpy()
    return code, z, vec
