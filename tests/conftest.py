"""Shared fixtures. Tests are small (64 px images, few angles) so the suite runs on 2 CPU cores."""

import os

import numpy as np
import pytest
import torch

# One thread per test process: the suite runs under pytest-xdist on 2 cores.
torch.set_num_threads(int(os.environ.get("CTROBUST_TEST_THREADS", "1")))

CUDA = torch.cuda.is_available()

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device"))]


@pytest.fixture(params=DEVICES)
def device(request):
    """Each test using it runs on the CPU, and on CUDA when a GPU is present."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Operators cache system matrices on disk; tests use a per-session cache directory."""
    cache = tmp_path_factory.getbasetemp() / "ctrobust-cache"
    monkeypatch.setenv("CTROBUST_CACHE_DIR", str(cache))


@pytest.fixture
def global_rng_untouched():
    """Use in tests of library code that must take randomness from explicit generators/seeds only."""
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    yield
    assert torch.equal(torch.random.get_rng_state(), torch_state), "global torch RNG was used"
    assert np.array_equal(np.random.get_state()[1], np_state), "global numpy RNG was used"
