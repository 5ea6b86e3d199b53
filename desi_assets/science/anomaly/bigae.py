"""BigAE: the seed's dense autoencoder over the 496-bin preprocessed spectrum (normalised flux units)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from desi_assets.science.torch_models import weights_version
from desi_assets.science.wavelength import N_BINS

#: Layer widths of the encoder (the decoder mirrors them).
ENCODER_WIDTHS: tuple[int, ...] = (N_BINS, 512, 256, 128)
#: Number of hex characters kept from the sha256 as the model version.


class BigAE(nn.Module):
    """Dense autoencoder 496→512→256→128→128→256→512→496 on normalised flux (dimensionless)."""

    def __init__(self, n_bins: int = N_BINS) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.encoder = nn.Sequential(
            nn.Linear(n_bins, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Dropout(0.15),
            nn.Linear(512, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(256, 128),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(128, 128),
            nn.ReLU(),
            nn.Linear(128, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(256, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Dropout(0.15),
            nn.Linear(512, n_bins),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent code (N,128) of normalised flux x (N,496)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (N,496) of normalised flux x (N,496), same units."""
        return self.decoder(self.encoder(x))




def save_model(model: BigAE, path: str | Path, meta: dict[str, Any]) -> str:
    """Write weights + meta (must hold 'training_set_version') to path; return the version hash (hex)."""
    if "training_set_version" not in meta:
        raise ValueError("meta must include 'training_set_version'")
    meta = json.loads(json.dumps(meta, sort_keys=True, default=str))  # JSON-clean copy
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    version = weights_version(state, meta)
    payload = {
        "format": "desi-ard/bigae/v1",
        "n_bins": int(getattr(model, "n_bins", N_BINS)),
        "state_dict": state,
        "meta_json": json.dumps(meta, sort_keys=True),
        "version": version,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return version


def load_model(path: str | Path) -> tuple[BigAE, dict[str, Any]]:
    """Load a saved BigAE in eval mode on CPU; meta gains 'version' (checked against the weights)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    meta = json.loads(payload["meta_json"])
    model = BigAE(n_bins=int(payload.get("n_bins", N_BINS)))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    version = weights_version(payload["state_dict"], meta)
    if version != payload["version"]:
        raise ValueError(f"model file {path} is corrupt: version {version} != {payload['version']}")
    meta["version"] = version
    return model, meta
