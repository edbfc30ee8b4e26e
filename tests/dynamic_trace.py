"""One program serving many sizes: a function exported once with dynamic map sizes, as ``vitzoo export --dynamic``
records models."""

import torch


class _Call(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def export_once(fn, example: torch.Tensor, sizes: dict[int, tuple[int, int]]):
    """``fn`` (a module or a function of one tensor) as a ``torch.export`` program traced at ``example`` with dims
    ``sizes`` symbolic over their ``(min, max)``; returned as a callable module.

    A size decision taken in Python at the traced size would pin the program to it: the export then fails, or the
    program refuses other sizes (or computes the traced size's case at them).
    """
    module = fn if isinstance(fn, torch.nn.Module) else _Call(fn)
    dims = {d: torch.export.Dim(f"size{d}", min=low, max=high) for d, (low, high) in sizes.items()}
    # a guard that holds over the whole range but is beyond the solver (the views of a grown window grid) becomes a
    # run-time check of the program instead of an export error; a guard that pins a size fails at the other sizes
    program = torch.export.export(
        module, (example,), dynamic_shapes={"x": dims}, prefer_deferred_runtime_asserts_over_guards=True
    )
    return program.module()
