"""Register the official VAN, BiFormer, CSWin and ViTAEv2-VSA implementations with timm, from the user's checkouts.

The benchmark compares vitzoo against the authors' code in the same run. vitzoo does not ship that code: pass the
paths of your own checkouts of https://github.com/Visual-Attention-Network/VAN-Classification,
https://github.com/rayleizhu/BiFormer (needs ``einops`` and ``fairscale`` installed) and
https://github.com/microsoft/CSWin-Transformer (needs ``einops``) and https://github.com/ViTAE-Transformer/ViTAE-VSA
(needs ``einops``). Their model functions are registered with timm
as ``official_<their name>`` (``official_van_b0``, ``official_biformer_tiny``, ...), wrapped to drop the config
arguments that timm 1.x passes and their timm-0.4-era functions do not accept.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch
from timm.models import register_model

# vitzoo name -> the official function's name
_OFFICIAL_FUNCTIONS = {
    **{f"vitzoo_van_b{i}": f"van_b{i}" for i in range(7)},
    "vitzoo_biformer_t": "biformer_tiny",
    "vitzoo_biformer_s": "biformer_small",
    "vitzoo_biformer_b": "biformer_base",
    "vitzoo_cswin_t": "CSWin_64_12211_tiny_224",
    "vitzoo_cswin_s": "CSWin_64_24322_small_224",
    "vitzoo_cswin_b": "CSWin_96_24322_base_224",
    "vitzoo_vitaev2_vsa_s": "ViTAEv2_VSA_S",
    "vitzoo_vitaev2_vsa_48m": "ViTAEv2_VSA_widePCM_48M",
    "vitzoo_vitaev2_vsa_b": "ViTAEv2_VSA_widePCM_B",
}
# vitzoo name -> the name the official model is registered under here
OFFICIAL_NAMES = {ours: f"official_{theirs}" for ours, theirs in _OFFICIAL_FUNCTIONS.items()}
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


@contextlib.contextmanager
def _cuda_calls_stay_on_cpu() -> Iterator[None]:
    """Make ``Tensor.cuda()`` a no-op while a model is built, for code that calls it in ``__init__`` (ViTAE-VSA)."""
    if torch.cuda.is_available():
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def _register(module: ModuleType, family: str) -> None:
    for ours, theirs in _OFFICIAL_FUNCTIONS.items():
        if not ours.startswith(f"vitzoo_{family}_") or not hasattr(module, theirs):
            continue

        def entry(pretrained: bool = False, _fn: Callable = getattr(module, theirs), **kwargs):
            for key in _TIMM_ONLY_KWARGS:
                kwargs.pop(key, None)
            with _cuda_calls_stay_on_cpu():
                return _fn(pretrained=pretrained, **kwargs)

        entry.__name__ = OFFICIAL_NAMES[ours]
        entry.__module__ = __name__
        register_model(entry)


def _import_by_path(repo: Path, relative: str, module_name: str, what: str) -> ModuleType:
    path = Path(repo) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the root of a {what} checkout")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its own @register_model looks the defining module up there
    spec.loader.exec_module(module)
    return module


def register_official_van(repo: Path) -> None:
    """Import ``models/van.py`` from a VAN-Classification checkout (by path: it has no package of its own)."""
    _register(_import_by_path(repo, "models/van.py", "official_van", "VAN-Classification"), "van")


def register_official_cswin(repo: Path) -> None:
    """Import ``models/cswin.py`` from a CSWin-Transformer checkout (by path, like VAN)."""
    _register(_import_by_path(repo, "models/cswin.py", "official_cswin", "CSWin-Transformer"), "cswin")


def register_official_biformer(repo: Path) -> None:
    """Import ``models.biformer`` from a BiFormer checkout (it imports ``ops.*`` relative to the repo root)."""
    repo = Path(repo).resolve()
    if not (repo / "models" / "biformer.py").is_file():
        raise FileNotFoundError(f"{repo}/models/biformer.py not found: pass the root of a BiFormer checkout")
    sys.path.insert(0, str(repo))
    try:
        module = importlib.import_module("models.biformer")
    finally:
        sys.path.remove(str(repo))
    _register(module, "biformer")


def register_official_vitaev2_vsa(repo: Path) -> None:
    """Import the ``vitaev2_vsa`` package from ``Image-Classification/`` of a ViTAE-VSA checkout.

    Its classification models call ``.cuda()`` while they are built; on a machine without CUDA that call is made a
    no-op during construction (the computation is otherwise untouched).
    """
    root = Path(repo).resolve() / "Image-Classification"
    if not (root / "vitaev2_vsa" / "models.py").is_file():
        raise FileNotFoundError(f"{root}/vitaev2_vsa/models.py not found: pass the root of a ViTAE-VSA checkout")
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("vitaev2_vsa.models")
    finally:
        sys.path.remove(str(root))
    _register(module, "vitaev2_vsa")
