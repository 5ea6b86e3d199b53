"""Anomaly-model files: save a fitted model once per training key, find it again, publish it, load the current one."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from desi_assets.science.anomaly.bigae import BigAE, load_model, save_model
from desi_assets.science.anomaly.catalog import LocalModel
from desi_assets.science.anomaly.fitting import FittedModel
from desi_assets.science.anomaly.local import LocalCalibration, ModelError
from desi_assets.storage.lakehouse import LakehouseResource

MODEL_NAME = "anomaly_model"


@dataclass(frozen=True)
class PublishedModel:
    """The current anomaly model: BigAE (CPU, eval), its version, its saved meta and what score_local needs."""

    net: BigAE
    version: str
    meta: dict
    local: LocalModel


@functools.lru_cache(maxsize=4)
def load_file(path: str) -> tuple[BigAE, dict]:
    """BigAE and meta of a saved model file (cached per process: files are immutable per version)."""
    return load_model(path)


def load_published(lakehouse: LakehouseResource, name: str = MODEL_NAME) -> PublishedModel:
    """The published model of a lakehouse (a clear error if it was never trained)."""
    net, meta = load_file(lakehouse.current_model(name)["path"])
    local = LocalModel(ModelError.from_json(meta.get("model_error")),
                       LocalCalibration.from_json(meta.get("local_calibration")))
    return PublishedModel(net, meta["version"], meta, local)


def current_model(lakehouse: LakehouseResource) -> tuple[BigAE, str]:
    """The published anomaly model and its version."""
    m = load_published(lakehouse)
    return m.net, m.version


def current_local_model(lakehouse: LakehouseResource) -> LocalModel:
    """The published model's error profile and local calibration (empty for models saved without them)."""
    return load_published(lakehouse).local


def _record_path(lakehouse: LakehouseResource, name: str, key: str) -> Path:
    return lakehouse.artifact_dir("models") / f"{name}-trained" / f"{key}.json"


def find_trained(lakehouse: LakehouseResource, key: str, name: str = MODEL_NAME) -> dict | None:
    """The record of a model already trained for this training key (training-set hash + config), if its file exists."""
    p = _record_path(lakehouse, name, key)
    if not p.exists():
        return None
    record = json.loads(p.read_text())
    return record if Path(record["path"]).exists() else None


def save_trained(lakehouse: LakehouseResource, fitted: FittedModel, meta: dict, key: str,
                 name: str = MODEL_NAME) -> dict:
    """Write the model file (named by its version) and the record that finds it by key; returns the record."""
    models = lakehouse.artifact_dir("models")
    tmp = models / f"{name}-new.pt"
    version = save_model(fitted.model, tmp, meta | {"model_error": fitted.model_error.to_json(),
                                                    "local_calibration": fitted.calibration.to_json()})
    path = models / f"{name}-{version}.pt"
    tmp.replace(path)
    record = {"key": key, "version": version, "path": str(path), "meta": meta}
    rp = _record_path(lakehouse, name, key)
    rp.parent.mkdir(parents=True, exist_ok=True)
    rp.with_suffix(".tmp").write_text(json.dumps(record, indent=1, default=str))
    rp.with_suffix(".tmp").replace(rp)
    return record


def update_record(lakehouse: LakehouseResource, record: dict, name: str = MODEL_NAME) -> None:
    """Rewrite a trained-model record (e.g. with its loss-curve path added)."""
    rp = _record_path(lakehouse, name, record["key"])
    rp.with_suffix(".tmp").write_text(json.dumps(record, indent=1, default=str))
    rp.with_suffix(".tmp").replace(rp)


def publish(lakehouse: LakehouseResource, record: dict, name: str = MODEL_NAME) -> Path:
    """Make a trained model the current one (atomic pointer)."""
    return lakehouse.publish_model(name, Path(record["path"]), record["version"], record["meta"])
