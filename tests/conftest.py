import os
import sys
from collections import OrderedDict

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


def _mmengine_managers() -> list[type]:
    """mmengine's ``ManagerMixin`` classes (``DefaultScope``, ``MessageHub``, ``MMLogger``, ``Visualizer``, ...)."""
    manager = sys.modules.get("mmengine.utils.manager")
    if manager is None:  # mmengine not imported (yet): nothing global to save
        return []
    found, todo = [], [manager.ManagerMixin]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


@pytest.fixture(autouse=True)
def _restore_mmengine_instances():
    """Put mmengine's process-global "current" instances back as they were before the test.

    A Runner built in-process, or ``register_all_modules(init_default_scope=True)``, makes its ``DefaultScope``
    (and message hub, logger, visualizer) the current one for the rest of the process. A later test that builds
    mmseg modules outside any scope then looks them up in that leftover scope's registry: ``'mmengine'`` fails
    (``CrossEntropyLoss is not in the mmengine::model registry``), ``'mmdet'`` silently builds mmdet's class instead.
    """
    saved = {cls: OrderedDict(cls._instance_dict) for cls in _mmengine_managers()}
    yield
    for cls in _mmengine_managers():  # classes first imported during the test had no instances before it
        # assigned, not updated in place: mmengine's own overwrite_default_scope() rebinds the dict too
        cls._instance_dict = OrderedDict(saved.get(cls, {}))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
