"""Backend selection shared by every 2-D attention primitive.

Each primitive (``vitzoo/ops/<op>/``) owns an :class:`OpBackends` table: an ordered list of backend names, each
backed by a module ``vitzoo.ops.<op>.<backend>``, imported when ``vitzoo.ops`` is (a backend whose optional
dependency is missing records why and is never chosen). A backend module exposes

* ``can_run(*args, **kwargs) -> str | None``: ``None`` when it can run these inputs, else the reason it cannot;
* ``forward(*args, **kwargs)``: the computation, with the same signature as the public op;
* optionally ``can_auto_select(*args, **kwargs) -> str | None``: a further reason to pass the backend over in
  automatic choice only (the Triton kernels run on CPU in Triton's interpreter when forced, for tests, but automatic
  choice must never pick that).

Automatic choice walks the priority list and logs (at INFO, once per distinct reason) why each skipped backend was
refused. A backend is switched off by the environment variable ``VITZOO_DISABLE_<BACKEND>=1`` or by
:func:`disable_backends`; a backend forced with ``backend=`` that cannot run raises :class:`BackendUnavailable` with
its reason. The ``reference`` backend can never be disabled: it is the specification.

Under ``torch.compile`` and ``torch.export`` automatic choice traces the reference backend: the walk above is
Python (imports, logging) that would break the graph, and the reference is plain tensor code the compiler fuses
and the exporters can write out. A backend asked for by name (``backend=`` or :func:`use_backend`) is still used
there: the Triton kernels are ``torch.library`` custom ops, one node each in the compiled graph (import the backend
first, e.g. by one eager call: a first import inside the trace is a graph break).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import torch

_logger = logging.getLogger("vitzoo.ops")

REFERENCE = "reference"

_state = threading.local()


class BackendUnavailable(RuntimeError):
    """A backend was asked for explicitly but cannot run the given inputs."""


def _disabled_in_context() -> set[str]:
    return getattr(_state, "disabled", set())


def is_disabled(backend: str) -> bool:
    """True when ``backend`` is switched off by ``VITZOO_DISABLE_<BACKEND>`` or :func:`disable_backends`."""
    if backend == REFERENCE:
        return False
    env = os.environ.get(f"VITZOO_DISABLE_{backend.upper()}", "").strip().lower()
    return env in {"1", "true", "yes", "on"} or backend in _disabled_in_context()


@contextlib.contextmanager
def disable_backends(*backends: str) -> Iterator[None]:
    """Switch off the named backends (of every op) inside the ``with`` block, in this thread."""
    previous = _disabled_in_context()
    _state.disabled = previous | set(backends)
    try:
        yield
    finally:
        _state.disabled = previous


@contextlib.contextmanager
def use_backend(backend: str | None) -> Iterator[None]:
    """Make ``backend`` the default for every op called inside the ``with`` block that has it (``None``: auto)."""
    previous = getattr(_state, "preferred", None)
    _state.preferred = backend
    try:
        yield
    finally:
        _state.preferred = previous


@dataclasses.dataclass
class OpCall:
    """One call of a 2-D attention op, as :func:`record_calls` saw it (the tensors themselves, not copies)."""

    op_name: str
    args: tuple
    kwargs: dict


@contextlib.contextmanager
def record_calls() -> Iterator[list[OpCall]]:
    """Collect every op call made inside the ``with`` block in this thread (they still run as usual).

    With a model on the meta device this lists the exact inputs its attention ops see at a given image size, at no
    compute cost: :mod:`vitzoo.kernel_launches` turns them into the Triton launches the model would make on a GPU.
    """
    previous = getattr(_state, "calls", None)
    _state.calls = []
    try:
        yield _state.calls
    finally:
        _state.calls = previous


def _import_backend(name: str) -> ModuleType | str:
    """The backend module ``name``, or why it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        return f"import failed ({e})"


class OpBackends:
    """The ordered backends of one op and the logic that picks one of them."""

    def __init__(self, op_name: str, package: str, priority: list[str]):
        if priority[-1] != REFERENCE:
            raise ValueError(f"{op_name}: the reference backend must come last in the priority list")
        self.op_name = op_name
        self.package = package
        self.priority = list(priority)
        # the reference is imported now, so that a traced call finds it without an import
        self._modules: dict[str, ModuleType | None] = {REFERENCE: importlib.import_module(f"{package}.{REFERENCE}")}
        self._import_errors: dict[str, str] = {}
        self._logged: set[tuple[str, str]] = set()

    def _module(self, backend: str) -> ModuleType | None:
        if backend not in self._modules:
            loaded = _import_backend(f"{self.package}.{backend}")
            if isinstance(loaded, str):  # an optional dependency is missing: remember why
                self._modules[backend] = None
                self._import_errors[backend] = loaded
            else:
                self._modules[backend] = loaded
        return self._modules[backend]

    def preload(self) -> None:
        """Import every backend now (recording why one cannot be): torch.compile cannot trace an import."""
        for backend in self.priority:
            self._module(backend)

    def why_not(self, backend: str, *args: Any, **kwargs: Any) -> str | None:
        """The reason ``backend`` cannot run these inputs, or ``None`` when it can."""
        if backend not in self.priority:
            return f"unknown backend {backend!r}; {self.op_name} has {self.priority}"
        if is_disabled(backend):
            return f"disabled by VITZOO_DISABLE_{backend.upper()} or disable_backends()"
        module = self._module(backend)
        if module is None:
            return self._import_errors[backend]
        return module.can_run(*args, **kwargs)

    def choose(self, *args: Any, backend: str | None = None, **kwargs: Any) -> Callable[..., Any]:
        """Return the ``forward`` of the requested backend, or of the first one that can run these inputs
        (inside ``torch.compile`` / ``torch.export``, without a request: the reference's)."""
        traced = torch.compiler.is_compiling()
        calls = getattr(_state, "calls", None)
        if calls is not None and not traced:
            calls.append(OpCall(self.op_name, args, kwargs))
        if backend is None:
            preferred = getattr(_state, "preferred", None)
            backend = preferred if preferred in self.priority else None
        if backend is None and traced:
            return self._modules[REFERENCE].forward
        if backend is not None:
            reason = self.why_not(backend, *args, **kwargs)
            if reason is not None:
                raise BackendUnavailable(f"{self.op_name}: backend {backend!r} cannot run: {reason}")
            return self._module(backend).forward
        for name in self.priority:
            reason = self.why_not(name, *args, **kwargs)
            if reason is None and hasattr(self._module(name), "can_auto_select"):
                reason = self._module(name).can_auto_select(*args, **kwargs)
            if reason is None:
                return self._module(name).forward
            if (name, reason) not in self._logged:
                self._logged.add((name, reason))
                _logger.info("%s: skipping backend %r: %s", self.op_name, name, reason)
        raise AssertionError("unreachable: the reference backend always runs")  # pragma: no cover

    def available(self, *args: Any, **kwargs: Any) -> dict[str, str | None]:
        """Map every backend to ``None`` (can run these inputs) or the reason it cannot."""
        return {name: self.why_not(name, *args, **kwargs) for name in self.priority}


def check_qkv(op_name: str, q: Any, k: Any, v: Any, rank: int, layout: str) -> None:
    """Raise a ValueError naming the expected layout when q/k/v do not share a rank, dtype and device."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != rank:
            raise ValueError(
                f"{op_name}: {name} must be a {rank}-D tensor laid out {layout}, got shape {tuple(t.shape)}"
            )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"{op_name}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{op_name}: q, k, v must share a device, got {q.device}, {k.device}, {v.device}")


def check_same_map(op_name: str, q: Any, k: Any, v: Any, leading: str) -> None:
    """Raise a ValueError unless ``q`` and ``k`` have one shape and ``v`` shares every dim but the last with them.

    ``leading`` names those shared dims for the message, e.g. ``"[B, H, W, heads]"``.
    """
    if q.shape != k.shape or q.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"{op_name}: q and k must have the same shape and v the same {leading}, "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
