"""Loading checkpoints safely: unwrapping training checkpoints, clear key-mismatch errors, refusing pickled code.

Every load in vitzoo goes through timm's pretrained machinery, which reads safetensors or calls
``torch.load(weights_only=True)``. This module adds what official releases need on top of that:

* :func:`unwrap_state_dict` takes the weights out of a training checkpoint (``state_dict_ema``, ``state_dict``,
  ``model_ema``, ``model``) and strips DDP/compile prefixes;
* :func:`check_state_dict` turns a key or shape mismatch into a ValueError that lists what is missing/extra;
* :func:`convert_checkpoint` is the whole of a family's ``checkpoint_filter_fn``: unwrap, convert an official
  layout entry by entry, check;
* :func:`guarded_load` lets ``weights_only`` loading accept ``argparse.Namespace`` (timm's training scripts store
  their arguments in every checkpoint) and turns "this file is pickled code", "this file is corrupt", "this link is
  dead" or "this link returned a web page" into a :class:`CheckpointError` that says so, instead of a traceback;
* :func:`weight_sources` reads where a pretrained cfg's weights are (a Hub repo, a direct file, or pages named in
  its notes to download from by hand), for the model cards and ``vitzoo info``;
* :func:`require_fetchable` refuses ``pretrained=True`` before any download when a cfg names no file a program can
  fetch (weights published only on share pages, or none), with the cfg's notes on where they are and the call that
  loads a downloaded file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pickle
import re
import urllib.error
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn as nn
from safetensors import SafetensorError

__all__ = [
    "CheckpointError",
    "WeightsUnavailable",
    "check_state_dict",
    "convert_checkpoint",
    "guarded_load",
    "require_fetchable",
    "unwrap_state_dict",
    "weight_sources",
]

_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint could not be used: unsafe, corrupt, or not matching the model."""


class WeightsUnavailable(CheckpointError):
    """``pretrained=True`` for a cfg whose weights no program can fetch (a share page, or none published)."""


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where official weights are: ``kind`` is ``"hf-hub"`` (a Hub repo timm loads), ``"direct"`` (a file url timm
    downloads) or ``"page"`` (a share page to download from by hand, named in the cfg's notes)."""

    kind: str
    link: str

    def describe(self) -> str:
        if self.kind == "page":
            return (
                f"{self.link} (official; a share page a program cannot download: download the file, then "
                "`pretrained=True, pretrained_cfg_overlay=dict(file=path)` converts it on load)"
            )
        return f"{self.link} (official, converted on load)"


def weight_sources(pretrained_cfg: Mapping) -> list[WeightSource]:
    """Every weight link a pretrained cfg records: its Hub repo, its url, and the pages its notes name."""
    sources = []
    if pretrained_cfg.get("hf_hub_id"):
        file = pretrained_cfg.get("hf_hub_filename")
        sources.append(WeightSource("hf-hub", f"hf-hub:{pretrained_cfg['hf_hub_id']}" + (f" ({file})" if file else "")))
    if pretrained_cfg.get("url"):
        sources.append(WeightSource("direct", pretrained_cfg["url"]))
    for link in re.findall(r"https?://[^\s)]+", " ".join(pretrained_cfg.get("notes") or ())):
        sources.append(WeightSource("page", link))
    return sources


def _load_call(model_name: str) -> str:
    return f"timm.create_model({model_name!r}, pretrained=True, pretrained_cfg_overlay=dict(file='PATH'))"


def require_fetchable(model_name: str, pretrained_cfg: Mapping) -> str | None:
    """The url a pretrained load of ``pretrained_cfg`` downloads (None when it loads a file, a Hub repo or a state
    dict); raise :class:`WeightsUnavailable` when it has none of these (timm would fall back to random weights with
    a warning), quoting the cfg's notes on where the official weights are and the call that loads a downloaded
    file."""
    from timm.models._builder import _resolve_pretrained_source  # timm's own decision of what it would load

    load_from, location = _resolve_pretrained_source(dict(pretrained_cfg))
    if load_from:
        return location if load_from == "url" else None
    notes = " ".join(pretrained_cfg.get("notes") or ()) or "No official weights were published for it."
    raise WeightsUnavailable(
        f"{model_name}: pretrained=True has no file a program can download. {notes} Load a downloaded checkpoint "
        f"with {_load_call(model_name)}"
    )


def unwrap_state_dict(checkpoint: Mapping, prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """Return the flat ``{name: tensor}`` weights inside a checkpoint, preferring EMA weights when present."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"expected a checkpoint dict, got {type(checkpoint).__name__}")
    keys = _WRAPPER_KEYS if prefer_ema else _WRAPPER_KEYS[2:]
    for key in keys:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping) and inner:
            checkpoint = inner
            break
    out = {}
    for name, value in checkpoint.items():
        for prefix in _PREFIXES:
            name = name.removeprefix(prefix)
        out[name] = value
    return out


def _summary(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module, skip_prefixes: tuple = ()) -> None:
    """Raise :class:`CheckpointError` when keys or shapes differ from ``model.state_dict()``.

    Keys starting with one of ``skip_prefixes`` (the classifier, which timm re-creates for another class count)
    are left out of the shape check.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and not k.startswith(skip_prefixes) and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_summary(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_summary(unexpected)}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches: {_summary(wrong)}")
        raise CheckpointError(
            f"checkpoint does not match {type(model).__name__} (was it saved for another variant?): " + "; ".join(parts)
        )


def convert_checkpoint(
    checkpoint: Mapping,
    model: nn.Module,
    official_prefixes: tuple[str, ...] = (),
    convert: Callable[[str, torch.Tensor], tuple[str, torch.Tensor] | None] | None = None,
    adapt: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Unwrap ``checkpoint``, convert it when it is in the official layout, and check it against ``model``.

    The official layout is recognised by a key starting with one of ``official_prefixes``; each of its entries then
    goes through ``convert(key, value)``, which returns the new ``(key, value)`` or ``None`` to drop the entry (a
    buffer the model rebuilds). Checkpoints in vitzoo's own layout pass through unchanged. The classifier may differ
    in shape (timm re-creates it for another class count); any other mismatch raises :class:`CheckpointError`.
    ``adapt(state_dict)`` runs on either layout before the check: it resizes tables tied to the training resolution.
    """
    state_dict = unwrap_state_dict(checkpoint)
    if convert is not None and any(k.startswith(official_prefixes) for k in state_dict):
        converted = (convert(key, value) for key, value in state_dict.items())
        state_dict = dict(item for item in converted if item is not None)
    if adapt is not None:
        state_dict = adapt(state_dict)
    check_state_dict(state_dict, model, skip_prefixes=("head.",))
    return state_dict


@contextlib.contextmanager
def guarded_load(model_name: str, url: str | None = None) -> Iterator[None]:
    """Wrap a pretrained load: allow argparse.Namespace, and explain unsafe or corrupt files and failed downloads.

    ``url``: the link the load downloads, if any. A download that is a web page instead of a checkpoint (a share
    page, or a dead link answered with HTML) is removed from the cache, so the next try downloads again.
    """
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            yield
    except urllib.error.HTTPError as e:
        raise CheckpointError(
            f"could not download weights for {model_name} from {url or e.url}: HTTP {e.code} {e.reason} (the link is "
            f"dead or needs a browser). Download the checkpoint by hand and load it with {_load_call(model_name)}"
        ) from e
    except urllib.error.URLError as e:
        raise CheckpointError(
            f"could not download weights for {model_name} from {url}: {e.reason}. Check the network, or download the "
            f"checkpoint by hand and load it with {_load_call(model_name)}"
        ) from e
    except (pickle.UnpicklingError, RuntimeError) as e:
        text = str(e).lower()
        if isinstance(e, RuntimeError) and "weights_only" not in text and "pytorchstreamreader" not in text:
            raise
        page = _web_page_download(url) if url is not None else None
        if page is not None:
            os.remove(page)  # a cached page would be read again by the next try instead of downloading
            raise CheckpointError(
                f"could not load weights for {model_name}: {url} returned a web page (HTML), not a checkpoint: the "
                f"link is a share page or dead (the downloaded page, {page}, was removed). Download the checkpoint "
                f"by hand and load it with {_load_call(model_name)}"
            ) from e
        if "pytorchstreamreader" in text:
            raise CheckpointError(f"could not read weights for {model_name}: the file is corrupt ({e})") from e
        # timm re-raises torch's refusal as a RuntimeError naming the blocked globals
        if "unsupported global" in text or "non-allowlisted" in text:
            raise CheckpointError(
                f"refusing to load weights for {model_name}: the file contains pickled Python objects that could "
                f"run code, and vitzoo loads only tensors (safetensors or torch.load(weights_only=True)). Convert it "
                f"with a trusted script to a plain state dict or safetensors. Details: {_unpickler_detail(e)}"
            ) from e
        raise CheckpointError(
            f"could not read weights for {model_name}: corrupt or not a checkpoint ({_unpickler_detail(e)})"
        ) from e
    except (EOFError, zipfile.BadZipFile, SafetensorError) as e:
        raise CheckpointError(f"could not read weights for {model_name}: the file is truncated or corrupt ({e})") from e


def _web_page_download(url: str) -> str | None:
    """The cached download of ``url`` (torch.hub's checkpoint cache, where timm puts it) if it is a web page."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", name)
    if not name or not os.path.isfile(cached):
        return None
    with open(cached, "rb") as f:
        head = f.read(512).lstrip()
    return cached if head.startswith(b"<") else None  # markup; a checkpoint starts with a zip or pickle header


def _unpickler_detail(e: Exception) -> str:
    """The informative line of torch's weights_only error (it follows 'WeightsUnpickler error:')."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return lines[0] if lines else repr(e)
