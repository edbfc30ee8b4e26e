import os

import pytest
import torch

# Without a GPU the Triton kernels are tested in Triton's interpreter; it must be on before any kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Keep CPU runs deterministic and within the 2-core budget.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def seed() -> int:
    """A fresh seed per test run (printed on failure) so tests see new random inputs, never fixed zeros."""
    value = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(value)
    return value


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
