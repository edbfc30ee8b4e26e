"""Register the official implementations with timm, from the user's checkouts.

The benchmarks compare vitzoo against the authors' code in the same run. vitzoo does not ship that code: pass the
paths of your own checkouts. Each official model is registered with timm as ``OFFICIAL_NAMES[<vitzoo name>]``
(``official_van_b0``, ``official_biformer_tiny``, ``official_agent_swin_t``, ...).

| family | checkout | extra packages it needs |
|---|---|---|
| VAN | https://github.com/Visual-Attention-Network/VAN-Classification | - |
| BiFormer | https://github.com/rayleizhu/BiFormer | ``einops``, ``fairscale`` |
| CSWin | https://github.com/microsoft/CSWin-Transformer | ``einops`` |
| ViTAEv2-VSA | https://github.com/ViTAE-Transformer/ViTAE-VSA | ``einops`` |
| CrossFormer | https://github.com/cheerss/CrossFormer at 4fbf750 (the v1 model file) | ``yacs`` |
| CrossFormer++ | https://github.com/cheerss/CrossFormer at 7952010 or later | ``yacs`` |
| MAViT (MALA) | https://github.com/qhfan/MALA | ``einops``, ``fvcore`` |
| Agent | https://github.com/LeapLabTHU/Agent-Attention | ``einops``, ``yacs`` |
| InLine | https://github.com/LeapLabTHU/InLine | ``einops``, ``yacs`` |
| FLatten | https://github.com/LeapLabTHU/FLatten-Transformer | ``einops``, ``yacs`` |

Model functions (VAN, BiFormer, CSWin, ViTAE-VSA, MALA) are wrapped to drop the arguments that timm 1.x passes and
their timm-0.4-era signatures do not accept. The Swin-repo-style checkouts (CrossFormer, Agent, InLine, FLatten) are
built the way their ``main.py`` builds them: the repo's yacs defaults, merged with the variant's yaml, passed to
``models.build.build_model``. Their top-level ``config`` and ``models`` packages share names across checkouts, so
each build imports them afresh and removes them from ``sys.modules`` afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import io
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch
import torch.nn as nn
from timm.models import register_model

# vitzoo name -> the official model function's name
_OFFICIAL_FUNCTIONS = {
    **{f"vitzoo_van_b{i}": f"van_b{i}" for i in range(7)},
    "vitzoo_biformer_t": "biformer_tiny",
    "vitzoo_biformer_s": "biformer_small",
    "vitzoo_biformer_b": "biformer_base",
    "vitzoo_cswin_t": "CSWin_64_12211_tiny_224",
    "vitzoo_cswin_s": "CSWin_64_24322_small_224",
    "vitzoo_cswin_b": "CSWin_96_24322_base_224",
    "vitzoo_cswin_l": "CSWin_144_24322_large_224",
    "vitzoo_cswin_b_384": "CSWin_96_24322_base_384",
    "vitzoo_cswin_l_384": "CSWin_144_24322_large_384",
    "vitzoo_vitaev2_vsa_s": "ViTAEv2_VSA_S",
    "vitzoo_vitaev2_vsa_48m": "ViTAEv2_VSA_widePCM_48M",
    "vitzoo_vitaev2_vsa_b": "ViTAEv2_VSA_widePCM_B",
    **{f"vitzoo_mala_{size}": f"MALA_{size.upper()}" for size in "tsbl"},
}
_CROSSFORMER_SIZES = {"t": "tiny", "s": "small", "b": "base", "l": "large", "h": "huge"}
# family -> vitzoo name -> the variant's yaml, relative to the checkout's config root
_OFFICIAL_CONFIGS = {
    "crossformer": {
        f"vitzoo_crossformer_{s}": f"configs/{_CROSSFORMER_SIZES[s]}_patch4_group7_224.yaml" for s in "tsbl"
    },
    "crossformer_pp": {
        f"vitzoo_crossformer_pp_{s}": f"configs/crossformer_pp/{_CROSSFORMER_SIZES[s]}_patch4_group_const_224.yaml"
        for s in "sblh"
    },
    # the PVT "large" variant's yaml is named ``*_pvt_b``
    **{
        mixer: {
            f"vitzoo_{mixer}_{host}_{size}": f"cfgs/{mixer}_{host}_{'b' if (host, size) == ('pvt', 'l') else size}.yaml"
            for host, sizes in hosts
            for size in sizes
        }
        for mixer, hosts in (
            ("agent", (("swin", "tsb"), ("pvt", "tsml"), ("deit", "tsb"), ("cswin", "tsb"))),
            ("inline", (("swin", "tsb"), ("pvt", "tsml"), ("deit", "tsb"), ("cswin", "tsb"))),
            ("flatten", (("swin", "tsb"), ("pvt", "t"), ("cswin", "t"))),
        )
    },
}
# the variants whose official function builds for 224 unless the training script passes ``img_size``
_OFFICIAL_IMG_SIZES = {"vitzoo_cswin_b_384": 384, "vitzoo_cswin_l_384": 384}
# vitzoo name -> the name the official model is registered under here
OFFICIAL_NAMES = {
    **{ours: f"official_{theirs}" for ours, theirs in _OFFICIAL_FUNCTIONS.items()},
    **{ours: f"official_{ours.removeprefix('vitzoo_')}" for family in _OFFICIAL_CONFIGS.values() for ours in family},
}
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


@contextlib.contextmanager
def _cuda_calls_stay_on_cpu() -> Iterator[None]:
    """Make ``Tensor.cuda()`` and ``Module.cuda()`` no-ops while a model is built, for code that calls them in
    ``__init__`` (ViTAE-VSA, the CSwin hosts of Agent / InLine / FLatten)."""
    if torch.cuda.is_available():
        yield
        return
    originals = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = originals


def _drop_timm_kwargs(kwargs: dict) -> dict:
    return {key: value for key, value in kwargs.items() if key not in _TIMM_ONLY_KWARGS}


def _register_functions(module: ModuleType, family: str) -> None:
    for ours, theirs in _OFFICIAL_FUNCTIONS.items():
        if not ours.startswith(f"vitzoo_{family}_") or not hasattr(module, theirs):
            continue

        def entry(pretrained: bool = False, _fn: Callable = getattr(module, theirs), _ours: str = ours, **kwargs):
            with _cuda_calls_stay_on_cpu():
                if family == "mala":  # ``MALA_T(args=None)`` takes no model arguments at all
                    return _fn()
                if _ours in _OFFICIAL_IMG_SIZES:
                    kwargs.setdefault("img_size", _OFFICIAL_IMG_SIZES[_ours])
                return _fn(pretrained=pretrained, **_drop_timm_kwargs(kwargs))

        _register_entry(entry, OFFICIAL_NAMES[ours])


def _register_entry(entry: Callable, name: str) -> None:
    entry.__name__ = name
    entry.__module__ = __name__
    register_model(entry)


def _import_by_path(repo: Path, relative: str, module_name: str, what: str) -> ModuleType:
    path = Path(repo) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the root of a {what} checkout")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its own @register_model looks the defining module up there
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its registrations may overwrite timm names
        spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _top_level_packages(root: Path, names: tuple[str, ...]) -> Iterator[dict[str, ModuleType]]:
    """Import ``names`` from ``root`` as top-level packages, and take them (and their submodules) out of
    ``sys.modules`` again on exit, restoring whatever held those names before."""

    def owned(key: str) -> bool:
        return any(key == name or key.startswith(f"{name}.") for name in names)

    saved = {key: module for key, module in sys.modules.items() if owned(key)}
    for key in saved:
        del sys.modules[key]
    sys.path.insert(0, str(root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # their registrations overwrite each other's timm names
            yield {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(str(root))
        for key in [key for key in sys.modules if owned(key)]:
            del sys.modules[key]
        sys.modules.update(saved)


@contextlib.contextmanager
def _timm_04_helpers() -> Iterator[None]:
    """Give code written against timm 0.4 the two helpers it calls in their 0.4 form, while it is imported and built.

    - ``register_model`` builds a ``PretrainedCfg`` from the module's ``default_cfgs`` entry: 0.4-era entries carry
      keys 1.x does not know (``hf_hub``), which are dropped here.
    - ``build_model_with_cfg(cls, variant, pretrained, default_cfg=..., pretrained_custom_load=..., **kwargs)``:
      without pretrained weights 0.4 built ``cls(**kwargs)`` and set ``default_cfg``; that is what it does here.
    """
    from timm.models import _registry, helpers

    known = set(_registry.PretrainedCfg.__dataclass_fields__)
    original_cfg, original_build = _registry.PretrainedCfg, helpers.build_model_with_cfg

    def pretrained_cfg(**cfg):
        return original_cfg(**{key: value for key, value in cfg.items() if key in known})

    def build_model_with_cfg(model_cls, variant, pretrained, default_cfg=None, **kwargs):
        if pretrained:
            raise ValueError("official models are built with random weights here")
        for key in ("pretrained_filter_fn", "pretrained_custom_load", "pretrained_strict", "feature_cfg"):
            kwargs.pop(key, None)
        model = model_cls(**kwargs)
        model.default_cfg = default_cfg
        return model

    _registry.PretrainedCfg, helpers.build_model_with_cfg = pretrained_cfg, build_model_with_cfg
    try:
        yield
    finally:
        _registry.PretrainedCfg, helpers.build_model_with_cfg = original_cfg, original_build


def _register_configs(root: Path, family: str, build_takes_args: bool) -> None:
    """Register each variant whose yaml the checkout has, built from the repo's yacs defaults and that yaml."""
    for ours, relative in _OFFICIAL_CONFIGS[family].items():
        if not (root / relative).is_file():
            continue

        def entry(pretrained: bool = False, _cfg_file: Path = root / relative, **kwargs):
            if pretrained:
                raise ValueError("official models are built with random weights here")
            # their builds print each merged file and each attention layer
            with contextlib.redirect_stdout(io.StringIO()), _timm_04_helpers(), _cuda_calls_stay_on_cpu():
                with _top_level_packages(root, ("config", "models")) as packages:
                    config = packages["config"]._C.clone()
                    packages["config"]._update_config_from_file(config, str(_cfg_file))
                    build = packages["models"].build_model
                    return build(config, None) if build_takes_args else build(config)

        _register_entry(entry, OFFICIAL_NAMES[ours])


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the root of a {what} checkout")
    return path


def register_official_van(repo: Path) -> None:
    """Import ``models/van.py`` from a VAN-Classification checkout (by path: it has no package of its own)."""
    _register_functions(_import_by_path(repo, "models/van.py", "official_van", "VAN-Classification"), "van")


def register_official_cswin(repo: Path) -> None:
    """Import ``models/cswin.py`` from a CSWin-Transformer checkout (by path, like VAN)."""
    _register_functions(_import_by_path(repo, "models/cswin.py", "official_cswin", "CSWin-Transformer"), "cswin")


def register_official_mala(repo: Path) -> None:
    """Import ``classfication_release/model.py`` (the repo's spelling) from a MALA checkout, by path."""
    module = _import_by_path(repo, "classfication_release/model.py", "official_mala", "MALA")
    _register_functions(module, "mala")


def register_official_biformer(repo: Path) -> None:
    """Import ``models.biformer`` from a BiFormer checkout (it imports ``ops.*`` relative to the repo root)."""
    repo = Path(repo).resolve()
    _require(repo / "models" / "biformer.py", "BiFormer")
    sys.path.insert(0, str(repo))
    try:
        module = importlib.import_module("models.biformer")
    finally:
        sys.path.remove(str(repo))
    _register_functions(module, "biformer")


def register_official_vitaev2_vsa(repo: Path) -> None:
    """Import the ``vitaev2_vsa`` package from ``Image-Classification/`` of a ViTAE-VSA checkout.

    Its classification models call ``.cuda()`` while they are built; on a machine without CUDA that call is made a
    no-op during construction (the computation is otherwise untouched).
    """
    root = Path(repo).resolve() / "Image-Classification"
    _require(root / "vitaev2_vsa" / "models.py", "ViTAE-VSA")
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("vitaev2_vsa.models")
    finally:
        sys.path.remove(str(root))
    _register_functions(module, "vitaev2_vsa")


def register_official_crossformer(repo: Path) -> None:
    """CrossFormer (v1) T/S/B/L from a CrossFormer checkout at 4fbf750, whose ``configs/`` holds the v1 yamls."""
    root = Path(repo).resolve()
    _require(root / "configs" / "tiny_patch4_group7_224.yaml", "CrossFormer (v1, commit 4fbf750)")
    _register_configs(root, "crossformer", build_takes_args=True)


def register_official_crossformer_pp(repo: Path) -> None:
    """CrossFormer++ S/B/L/H from a CrossFormer checkout at 7952010 or later (``configs/crossformer_pp/``)."""
    root = Path(repo).resolve()
    _require(root / "configs" / "crossformer_pp" / "small_patch4_group_const_224.yaml", "CrossFormer (7952010+)")
    _register_configs(root, "crossformer_pp", build_takes_args=True)


def register_official_linear(repo: Path, mixer: str) -> None:
    """The Agent-, InLine- or FLatten- hosts (``mixer``: ``agent``, ``inline``, ``flatten``) from LeapLab's
    checkout of that method (Agent-Attention keeps its classification code in ``agent_transformer/``)."""
    if mixer not in ("agent", "inline", "flatten"):
        raise ValueError(f"unknown linear-attention mixer {mixer!r}; expected agent, inline or flatten")
    root = Path(repo).resolve()
    if mixer == "agent":
        root = root / "agent_transformer"
    _require(root / "models" / "build.py", CHECKOUTS[mixer][1])
    _register_configs(root, mixer, build_takes_args=False)


# family (the vitzoo-name prefix it serves) -> (the registration to call with a checkout, the repository on GitHub)
CHECKOUTS = {
    "van": (register_official_van, "Visual-Attention-Network/VAN-Classification"),
    "biformer": (register_official_biformer, "rayleizhu/BiFormer"),
    "cswin": (register_official_cswin, "microsoft/CSWin-Transformer"),
    "vitaev2_vsa": (register_official_vitaev2_vsa, "ViTAE-Transformer/ViTAE-VSA"),
    "crossformer": (register_official_crossformer, "cheerss/CrossFormer"),
    "crossformer_pp": (register_official_crossformer_pp, "cheerss/CrossFormer"),
    "mala": (register_official_mala, "qhfan/MALA"),
    **{
        mixer: (functools.partial(register_official_linear, mixer=mixer), f"LeapLabTHU/{repo}")
        for mixer, repo in (("agent", "Agent-Attention"), ("inline", "InLine"), ("flatten", "FLatten-Transformer"))
    },
}
