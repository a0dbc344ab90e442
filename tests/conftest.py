import os

import pytest
import torch


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
