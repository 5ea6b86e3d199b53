import torch

from desi_assets.science.torch_models import resolve_device, torch_threads


def test_auto_picks_cuda_only_when_available():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_named_device_is_kept():
    assert resolve_device("cpu") == torch.device("cpu")


def test_weights_version_depends_on_weights_and_meta_only():
    from torch import nn

    from desi_assets.science.torch_models import VERSION_CHARS, count_parameters, weights_version

    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    state = net.state_dict()
    v = weights_version(state, {"a": 1})
    assert len(v) == VERSION_CHARS and v == weights_version({k: t.clone() for k, t in state.items()}, {"a": 1})
    assert v != weights_version(state, {"a": 2})
    assert v != weights_version({k: t + 1 for k, t in state.items()}, {"a": 1})
    assert count_parameters(net) == 3 * 2 + 2


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_default_threads_follows_a_callers_omp_cap_else_the_cores(monkeypatch):
    from desi_assets.science.torch_models import default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads(cap=2) == 3  # the caller's explicit cap wins over the default cap
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert default_threads() == 4
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert default_threads() == 2
