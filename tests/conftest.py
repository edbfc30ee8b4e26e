import os
import sys
from collections import OrderedDict

import pytest
import torch

# Without a GPU the Triton kernels are tested in Triton's interpreter; it must be on before any kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Keep CPU runs deterministic and within the 2-core budget: with pytest-xdist's workers (``make test`` runs two),
# the cores are shared among them, since more threads than cores make every worker wait on the others
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))


def pytest_addoption(parser):
    parser.addoption(
        "--reverse-order", action="store_true", help="run the collected tests last to first (order-dependence check)"
    )
    parser.addoption(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="run every test that takes the `seed` fixture N times, each with a fresh seed (a chance-failure hunt)",
    )


def pytest_generate_tests(metafunc):
    rounds = metafunc.config.getoption("--seeds")
    if rounds > 1 and "seed" in metafunc.fixturenames:
        metafunc.parametrize("seed", range(rounds), indirect=True, ids=lambda i: f"seed{i}")


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


# variables that switch behaviour of vitzoo or the libraries under it (others are set by imported libraries)
_WATCHED_ENV = ("VITZOO_", "TRITON_", "TORCH", "PYTORCH_", "HF_", "WANDB_")


def _process_state() -> dict:
    """What a test could change for every test after it, in this process."""
    from torch.overrides import _get_current_function_mode_stack
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    from vitzoo.ops import _dispatch

    return {
        "environment": {k: v for k, v in os.environ.items() if k.startswith(_WATCHED_ENV)},
        "default dtype": torch.get_default_dtype(),
        "default device": torch.empty(0).device,  # a leaked ``with torch.device(...)`` shows here
        "grad mode": torch.is_grad_enabled(),
        "torch function modes": [type(m).__name__ for m in _get_current_function_mode_stack()],
        "dispatch modes": [type(m).__name__ for m in _get_current_dispatch_mode_stack()],
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "threads": torch.get_num_threads(),
        "vitzoo backend choice": (
            getattr(_dispatch._state, "disabled", None) or set(),
            getattr(_dispatch._state, "preferred", None),
            getattr(_dispatch._state, "calls", None),
        ),
    }


@pytest.fixture(autouse=True)
def _leaves_no_process_state():
    """Fail the test (at teardown) that leaves process-global state changed, naming what changed; put it back first
    so the tests after it run as they would alone."""
    before = _process_state()
    yield
    after = _process_state()
    changed = [key for key in before if before[key] != after[key]]
    if not changed:
        return
    for key in after["environment"].keys() - before["environment"].keys():
        del os.environ[key]
    os.environ.update(before["environment"])
    torch.set_default_dtype(before["default dtype"])
    torch.set_grad_enabled(before["grad mode"])
    torch.use_deterministic_algorithms(before["deterministic algorithms"])
    torch.set_num_threads(before["threads"])
    details = {k: (before[k], after[k]) for k in changed if k != "environment"}
    if "environment" in changed:
        env_before, env_after = before["environment"], after["environment"]
        details["environment"] = sorted(
            k for k in env_before.keys() | env_after.keys() if env_before.get(k) != env_after.get(k)
        )
    pytest.fail(f"the test left process state changed: {details}")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse-order"):
        items.reverse()
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
