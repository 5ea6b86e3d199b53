import torch

from desi_assets.science.devices import resolve_device


def test_auto_picks_cuda_only_when_available():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_named_device_is_kept():
    assert resolve_device("cpu") == torch.device("cpu")
