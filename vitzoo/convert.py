"""Turn an official checkpoint into a timm-native Hugging Face Hub repository folder, checked before it is written.

:func:`convert_to_hub_folder` loads the checkpoint through the model's own checkpoint filter (as
``pretrained_cfg_overlay=dict(file=...)`` does), saves it with timm's :func:`timm.models.save_for_hf`
(``model.safetensors`` without non-persistent buffers, and ``config.json``), adds the model card, and then reloads the
folder the way a user will, ``timm.create_model('hf-hub:...', pretrained=True)``, in a separate offline process from
a cache laid out as ``huggingface_hub`` lays it out. A folder whose logits differ from the model loaded from the
original checkpoint is never written. :func:`push_folder` uploads a written folder with ``huggingface_hub``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.file_download import repo_folder_name
from timm.models import get_arch_pretrained_cfgs, save_for_hf

from .hub import CheckpointError
from .model_card import card_dict, render_card

__all__ = [
    "HUB_NAMESPACE",
    "ConversionError",
    "ConversionResult",
    "convert_to_hub_folder",
    "converted_repo_id",
    "push_folder",
]

# the same weights in the same architecture: the reloaded logits are expected to be bitwise equal; this allows for a
# kernel choosing another summation order between processes
RELATIVE_TOLERANCE = 1e-6
# the Hub namespace converted repos are published under, named as timm names its own (``timm/<arch>.<tag>``); a cfg
# points at one with ``hf_hub_id`` once it is published, and keeps the official link until then
HUB_NAMESPACE = "vitzoo"


class ConversionError(RuntimeError):
    """A conversion that cannot be written as asked (bad arguments, or a folder that does not reload as it must)."""


@dataclass(frozen=True)
class ConversionResult:
    out: Path
    repo_id: str
    max_abs_diff: float
    max_abs_logit: float
    input_shape: tuple[int, ...]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pretrained_name(model: str, tag: str | None) -> str:
    """``arch.tag``: the cfg (preprocessing, licence, notes) the converted repo is published with."""
    arch, _, given = model.partition(".")
    if not timm.is_model(arch) or not arch.startswith("vitzoo_"):
        raise ConversionError(f"unknown vitzoo model {arch!r}; `vitzoo list` names every model")
    tag = tag or given
    tags = [full.partition(".")[2] for full in get_arch_pretrained_cfgs(arch)]
    if tag and tag not in tags:
        raise ConversionError(f"{arch} has no pretrained tag {tag!r}; its tags: {[t for t in tags if t] or 'none'}")
    tag = tag or tags[0]
    return f"{arch}.{tag}" if tag else arch


def converted_repo_id(pretrained_name: str) -> str:
    """The vitzoo Hub repo a converted ``arch.tag`` is published as."""
    return f"{HUB_NAMESPACE}/{pretrained_name}"


def _populate_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay ``folder`` out as huggingface_hub's cache holds a downloaded repo: ``refs/main`` names a snapshot whose
    files are links into ``blobs/`` (named by content hash), so ``hf_hub_download`` finds them offline."""
    root = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    digests = {p: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}  # each file read once
    revision = hashlib.sha1("".join(digests.values()).encode()).hexdigest()
    snapshot = root / "snapshots" / revision
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path, digest in digests.items():
        blob = root / "blobs" / digest
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)


_RELOAD = """
import sys, timm, torch, vitzoo
model = timm.create_model('hf-hub:' + sys.argv[1], pretrained=True).eval()
x = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    torch.save(model(x), sys.argv[3])
"""


def _reload_offline(repo_id: str, folder: Path, x: torch.Tensor, work: Path) -> torch.Tensor:
    """Logits of ``hf-hub:repo_id`` loaded by timm in a fresh process that can only read the cache of ``folder``."""
    cache = work / "hub"
    _populate_cache(cache, repo_id, folder)
    torch.save(x, work / "input.pt")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(work / "hf_home"))
    argv = [sys.executable, "-c", _RELOAD, repo_id, str(work / "input.pt"), str(work / "logits.pt")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConversionError(f"the converted folder does not load through hf-hub:{repo_id}:\n{done.stderr[-3000:]}")
    return torch.load(work / "logits.pt", weights_only=True)


def convert_to_hub_folder(
    checkpoint: str | os.PathLike,
    model: str,
    out: str | os.PathLike,
    tag: str | None = None,
    repo_id: str | None = None,
) -> ConversionResult:
    """Convert ``checkpoint`` (official or vitzoo layout) for ``model`` into the Hub folder ``out``.

    ``repo_id`` is the repository the folder is meant for (default :func:`converted_repo_id`; the card's usage line
    names it, and the offline reload uses it as the cache's repo name). ``out`` must not exist yet, or be empty; it
    appears only once the reload matched.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_file():
        raise ConversionError(f"checkpoint {checkpoint} is not a file")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"{out} already exists and is not an empty folder; choose a new --out")
    name = _pretrained_name(model, tag)
    arch = name.partition(".")[0]
    repo_id = repo_id or converted_repo_id(name)
    try:
        source = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(checkpoint))).eval()
    except CheckpointError as e:
        raise ConversionError(f"{checkpoint} cannot be loaded into {arch}: {e}") from e
    size = source.pretrained_cfg["input_size"]
    x = torch.randn((2, *size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = source(x)
    if not torch.isfinite(want).all():
        raise ConversionError(f"{arch} loaded from {checkpoint} gives non-finite logits; nothing written")

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        folder, work = Path(tmp) / "repo", Path(tmp) / "work"
        work.mkdir()
        save_for_hf(source, str(folder), safe_serialization=True)
        got = _reload_offline(repo_id, folder, x, work)
        diff = (got - want).abs().max().item() if got.shape == want.shape else float("inf")
        scale = want.abs().max().item()
        if not diff <= RELATIVE_TOLERANCE * max(1.0, scale):
            raise ConversionError(
                f"hf-hub:{repo_id} reloaded from the converted folder differs from {checkpoint.name} loaded directly "
                f"(max abs logit difference {diff:.3g}, logits up to {scale:.3g}); nothing written"
            )
        result = ConversionResult(out, repo_id, diff, scale, tuple(x.shape))
        conversion = dict(
            checkpoint=checkpoint.name,
            sha256=_sha256(checkpoint),
            repo_id=repo_id,
            max_abs_diff=diff,
            max_abs_logit=scale,
            input="x".join(map(str, x.shape)),
        )
        (folder / "README.md").write_text(render_card(card_dict(arch, conversion=conversion)))
        if out.exists():
            out.rmdir()
        os.replace(folder, out)
    return result


def push_folder(folder: str | os.PathLike, repo_id: str, private: bool = False) -> str:
    """Upload a folder written by :func:`convert_to_hub_folder` to ``repo_id``; returns the commit url.

    The token is huggingface_hub's: ``HF_TOKEN`` in the environment, or the one ``hf auth login`` stored."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise ConversionError(f"{folder} is not a converted folder (config.json and model.safetensors expected)")
    token = get_token()
    if not token:
        raise ConversionError(
            "no Hugging Face token: set HF_TOKEN in the environment (a token with write access) or run `hf auth login`"
        )
    config = json.loads((folder / "config.json").read_text())
    api = HfApi(token=token)
    message = f"Add {config.get('architecture')} (vitzoo convert)"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message)
    except (HfHubHTTPError, OSError) as e:  # refused token, no such namespace, no network
        raise ConversionError(f"uploading {folder} to {repo_id} failed (the folder is kept): {e}") from e
    return str(getattr(info, "commit_url", info))
