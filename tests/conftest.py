import os

import pytest
import torch
from tiny import TINY


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def device() -> torch.device:
    """Where tests that take this fixture run the code under test: the CPU, or the device named
    by ``SKNET_TEST_DEVICE`` (e.g. ``cuda`` on a lent GPU; TF32 off, so fp32 means fp32)."""
    chosen = torch.device(os.environ.get("SKNET_TEST_DEVICE", "cpu"))
    if chosen.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return chosen


@pytest.fixture
def one_thread():
    """One PyTorch thread during the test (runs whose results must not depend on scheduling)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A one-epoch digits run of the tiny model at 8x8 (read only): best.safetensors + best.json
    with the preprocessing, and last.pt holding the same weights."""
    from sknet.training import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("digits") / "run"
    train(out=str(out), model_kwargs=TINY, input_size=8, epochs=1)
    torch.set_num_threads(threads)
    return out
