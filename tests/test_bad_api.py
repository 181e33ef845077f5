"""Issue 26 from the Python API: sizes refused before they are allocated, devices refused by name,
messages that say what is true, and a thread count that is chosen for the call and given back."""

import importlib
from pathlib import Path

import pytest
import torch

import toysuper as ts
from toysuper import memory, threads
from toysuper.devices import resolve_device
from device import DEVICE

GIB = 2**30


@pytest.fixture
def one_gib(monkeypatch):
    """A device that can give 1 GiB, whatever this machine has."""
    monkeypatch.setattr(memory, "available_bytes", lambda device: GIB)


# ---- item 1: sizes are checked before anything is allocated ------------------------------------

@pytest.mark.parametrize("build, named", [
    (lambda: ts.FeatureDistribution(10**9, 1e-9, device=DEVICE), "FeatureDistribution(n_features=1000000000"),
    (lambda: ts.ToyModel(10**6, 10**5, device=DEVICE), "ToyModel(n_features=1000000, d_hidden=100000"),
    (lambda: ts.SAE(3, 10**8, device=DEVICE), "SAE(d_hidden=3, d_sae=100000000"),
    (lambda: ts.SAE(4, 10**6, n_instances=100, recipe="topk", device=DEVICE), "n_instances=100"),
])
def test_a_model_larger_than_the_device_is_refused_with_its_sizes(one_gib, build, named):
    with pytest.raises(ValueError) as error:
        build()
    message = str(error.value)
    assert named in message and "needs about" in message and "can give about 1.0 GiB" in message


def test_sizes_that_fit_are_built(one_gib):
    assert ts.FeatureDistribution(1000, 0.01, device=DEVICE).n_features == 1000
    assert ts.SAE(64, 1024, device=DEVICE).W_dec.shape == (1, 1024, 64)


def test_the_estimates_grow_with_every_size():
    assert memory.distribution_bytes(10**9) > 24 * 10**9  # the case that filled a 24 GB machine
    assert memory.sae_bytes(3, 10**8) > memory.sae_bytes(3, 10**7) > memory.sae_bytes(3, 10**7, 1) / 2
    assert memory.toy_model_bytes(10, 5, 4) == 4 * memory.toy_model_bytes(10, 5)


def test_the_real_limit_refuses_what_no_machine_holds():
    cpu = torch.device("cpu")
    total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024 if Path("/proc/meminfo").exists() else 2**60
    assert 0 < memory.available_bytes(cpu) <= total
    with pytest.raises(ValueError, match=r"FeatureDistribution\(n_features=1000000000000, n_instances=1\)"):
        ts.FeatureDistribution(10**12, 1e-12, device=DEVICE)  # 4 TB for one table alone


def test_load_says_the_saved_sae_is_too_large_not_that_it_is_no_sae(tmp_path, monkeypatch):
    path = ts.SAE(16, 64, device=DEVICE).save(tmp_path / "sae")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1024)
    with pytest.raises(ValueError, match=r"SAE\(d_hidden=16, d_sae=64, n_instances=1\) needs about") as error:
        ts.SAE.load(path, device=DEVICE)
    assert "does not describe" not in str(error.value)


# ---- items 4 and 7: devices validated once, by name ------------------------------------------

UNUSABLE = ["mps", "cuda", "cuda:1", "meta", torch.device("meta"), "gpu", "xpu"]


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without CUDA or MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    return {"sae": ts.SAE(4, 8, device="cpu").save(folder / "sae"),
            "toy": ts.ToyModel(5, 2, device="cpu").save(folder / "toy")}


ENTRY_POINTS = {
    "FeatureDistribution": lambda d, saved: ts.FeatureDistribution(5, 0.1, device=d),
    "sparsity_sweep": lambda d, saved: ts.FeatureDistribution.sparsity_sweep(5, [0.0, 0.9], device=d),
    "FeatureDistribution.to": lambda d, saved: ts.FeatureDistribution(5, 0.1, device="cpu").to(d),
    "ToyModel": lambda d, saved: ts.ToyModel(5, 2, device=d),
    "ToyModel.load": lambda d, saved: ts.ToyModel.load(saved["toy"], device=d),
    "SAE": lambda d, saved: ts.SAE(4, 8, device=d),
    "SAE.load": lambda d, saved: ts.SAE.load(saved["sae"], device=d),
    "random_directions": lambda d, saved: ts.random_directions(5, 3, device=d),
    "load_saelens": lambda d, saved: ts.load_saelens(saved["sae"], device=d),
}


@pytest.mark.parametrize("device", UNUSABLE, ids=str)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_refuses_a_device_this_machine_cannot_use(no_gpu, saved, entry, device):
    with pytest.raises(ValueError, match=r"device=.*usable here: \['cpu'\]"):
        ENTRY_POINTS[entry](device, saved)


def test_the_sae_names_the_device_not_a_hyperparameter(no_gpu):
    with pytest.raises(ValueError, match="device='mps' cannot be used: MPS is not available") as error:
        ts.SAE(4, 8, device="mps")
    assert "l1_coefficient" not in str(error.value)


def test_load_on_cuda_without_cuda_says_so(no_gpu, saved):
    with pytest.raises(ValueError, match="device='cuda' cannot be used: CUDA is not available") as error:
        ts.SAE.load(saved["sae"], device="cuda")
    assert "does not describe" not in str(error.value)


def test_usable_devices_pass():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


# ---- item 8: a thread count for the call, given back after it --------------------------------

def _spy_on_threads(monkeypatch) -> list[int]:
    """torch's thread count seen inside train_toy_model, train_sae and evaluate (when their progress bar starts)."""
    seen = []
    for name in ("toysuper.toy.train", "toysuper.sae.train", "toysuper.grade.evaluate"):
        module = importlib.import_module(name)

        def spy(*args, _bar=module.progress_bar, **kwargs):
            seen.append(torch.get_num_threads())
            return _bar(*args, **kwargs)

        monkeypatch.setattr(module, "progress_bar", spy)
    return seen


def _train_and_grade(**kwargs) -> None:
    dist = ts.FeatureDistribution(6, 0.2, device=DEVICE)
    model = ts.ToyModel(6, 3, device=DEVICE)
    ts.train_toy_model(model, dist, steps=3, batch_size=64, quiet=True, **kwargs)
    source = ts.ToyModelSource(model, dist)
    sae = ts.SAE(3, 12, device=DEVICE)
    ts.train_sae(sae, source, steps=3, batch_size=64, quiet=True, **kwargs)
    ts.evaluate(sae, source, n_samples=256, quiet=True, **kwargs)


def test_threads_hold_inside_the_call_and_are_restored_after(monkeypatch):
    seen = _spy_on_threads(monkeypatch)
    torch.set_num_threads(1)
    _train_and_grade(threads=2)
    assert seen == [2, 2, 2] and torch.get_num_threads() == 1


def test_by_default_one_thread_unless_the_caller_chose(monkeypatch):
    seen = _spy_on_threads(monkeypatch)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_AT_IMPORT", 3)
    torch.set_num_threads(3)  # torch's own default, as at import: one thread inside, 3 again after
    _train_and_grade()
    assert seen == [1, 1, 1] and torch.get_num_threads() == 3
    torch.set_num_threads(2)  # the caller's own choice is kept
    _train_and_grade()
    assert seen[3:] == [2, 2, 2] and torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # and so is the environment's
    torch.set_num_threads(3)
    _train_and_grade(threads=None)
    assert seen[6:] == [3, 3, 3]
    torch.set_num_threads(1)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_a_bad_thread_count_is_named(bad):
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match=f"threads must be .* got {bad!r}"):
        ts.train_toy_model(ts.ToyModel(4, 2, device=DEVICE), ts.FeatureDistribution(4, 0.2, device=DEVICE), steps=2,
                           quiet=True, threads=bad)
    assert torch.get_num_threads() == before
