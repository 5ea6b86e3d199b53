"""What every torch model shares: device choice, thread count, parameter count, weight-content version."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

#: Hex characters of a model version.
VERSION_CHARS = 12


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (count); BatchNorm running stats are buffers, not counted."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def weights_version(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """Short sha256 (hex) of the state dict (sorted keys: name, dtype, shape, bytes) plus the canonical JSON of meta."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()[:VERSION_CHARS]


def default_threads(cap: int = 4) -> int:
    """Torch threads when none are configured: OMP_NUM_THREADS where a caller set it (a worker's or the test run's
    share of the cores), else min(cap, cores)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(cap, os.cpu_count() or 1))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with n torch intra-op threads (None or 0: unchanged), then restore the previous count."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
