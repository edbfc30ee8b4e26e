"""``vitzoo convert``: an official-layout checkpoint becomes a timm Hub folder that reloads through ``hf-hub:`` offline
with the same logits, or nothing is written."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import re

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from test_checkpoints import NO_OFFICIAL_RELEASE, official_checkpoint
from test_models import DEPLOY_FAST

import vitzoo  # noqa: F401
from vitzoo import convert
from vitzoo.cli import main
from vitzoo.convert import ConversionError, convert_to_hub_folder, push_folder

FAST = "vitzoo_van_b0"
WITH_OFFICIAL_CODE = [m for m in DEPLOY_FAST if not m.startswith(NO_OFFICIAL_RELEASE)]


def finite_official_checkpoint(name: str, path: pathlib.Path) -> pathlib.Path:
    """A random checkpoint in the official key layout and wrapper, at a scale whose logits stay finite."""
    ckpt = official_checkpoint(name)
    state_dict = next(v for v in ckpt.values() if isinstance(v, dict))
    for key, value in state_dict.items():
        if value.is_floating_point() and not key.endswith("running_var"):
            state_dict[key] = value * 0.02
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def van_checkpoint(tmp_path_factory) -> pathlib.Path:
    return finite_official_checkpoint(FAST, tmp_path_factory.mktemp("ckpt") / "van_tiny_754.pth.tar")


@pytest.fixture(scope="module")
def converted_and_printed(van_checkpoint, tmp_path_factory) -> tuple[pathlib.Path, str]:
    out = tmp_path_factory.mktemp("conv") / "van_b0"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["convert", str(van_checkpoint), "--model", f"{FAST}.official_in1k", "--out", str(out)])
    assert code == 0
    return out, printed.getvalue()


@pytest.fixture
def converted(converted_and_printed) -> pathlib.Path:
    return converted_and_printed[0]


def test_the_folder_holds_timms_files_with_the_checkpoints_weights(converted, van_checkpoint):
    assert sorted(p.name for p in converted.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    direct = timm.create_model(FAST, pretrained=True, pretrained_cfg_overlay=dict(file=str(van_checkpoint)))
    saved = load_file(converted / "model.safetensors")
    # the persistent state only (timm's save_for_hf), each tensor the one the family's filter made of the checkpoint
    assert saved.keys() == direct.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in direct.state_dict().items())
    config = json.loads((converted / "config.json").read_text())
    assert config["architecture"] == FAST and config["num_classes"] == 1000
    assert config["pretrained_cfg"]["tag"] == "official_in1k" and config["pretrained_cfg"]["license"] == "apache-2.0"


def test_the_card_is_hub_metadata_with_this_conversions_parity(converted, van_checkpoint):
    import hashlib

    card = ModelCard((converted / "README.md").read_text())
    assert card.data.library_name == "timm" and card.data.license == "apache-2.0"
    assert hashlib.sha256(van_checkpoint.read_bytes()).hexdigest() in card.text
    assert "timm.create_model('hf-hub:vitzoo/vitzoo_van_b0.official_in1k', pretrained=True)" in card.text
    # the same weights in another file: equal logits up to the order the kernels sum in (which the thread count
    # and the tensors' alignment decide)
    diff = re.search(r"max abs difference (\S+) \(logits up to ([^)]+)\)", card.text)
    assert diff and float(diff[1]) <= 1e-6 * float(diff[2]), card.text


def test_the_cli_reports_the_reload_difference(converted_and_printed):
    out, printed = converted_and_printed
    assert f"wrote {out}" in printed and "reloaded offline as hf-hub:vitzoo/vitzoo_van_b0.official_in1k" in printed
    diff = re.search(r"logit difference (\S+) to the checkpoint loaded directly \(logits up to ([^,]+),", printed)
    assert diff and float(diff[1]) <= 1e-6 * float(diff[2]), printed


def test_a_folder_that_reloads_differently_is_not_written(van_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(convert, "_reload_offline", lambda *args: torch.full((2, 1000), 0.5))
    out = tmp_path / "bad"
    with pytest.raises(ConversionError, match="differs from van_tiny_754.pth.tar loaded directly"):
        convert_to_hub_folder(van_checkpoint, FAST, out)
    assert not out.exists() and list(tmp_path.iterdir()) == [], "no folder and no temporary left behind"


def test_a_checkpoint_of_another_variant_is_refused_naming_the_mismatch(tmp_path, capsys):
    ckpt = finite_official_checkpoint("vitzoo_van_b1", tmp_path / "b1.pth")
    assert main(["convert", str(ckpt), "--model", FAST, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "cannot be loaded into vitzoo_van_b0" in err and "shape mismatches" in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_tag_is_refused_naming_the_tags(van_checkpoint, tmp_path, capsys):
    argv = ["convert", str(van_checkpoint), "--model", FAST, "--tag", "in22k", "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    assert "has no pretrained tag 'in22k'; its tags: ['official_in1k']" in capsys.readouterr().err


def test_a_folder_with_files_in_it_is_not_overwritten(van_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["convert", str(van_checkpoint), "--model", FAST, "--out", str(out)]) == 1
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_push_needs_a_token_and_uploads_the_folder_with_one(converted, monkeypatch, tmp_path):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no_login" / "token"))
    with pytest.raises(ConversionError, match="set HF_TOKEN"):
        push_folder(converted, "someone/van-b0")
    calls = []

    class RecordingApi:
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in pathlib.Path(folder_path).iterdir())))
            return "https://huggingface.co/someone/van-b0/commit/abc"

    monkeypatch.setenv("HF_TOKEN", "hf_test")

    class OfflineApi(RecordingApi):
        def create_repo(self, repo_id, private, exist_ok):
            raise OSError("Network is unreachable")

    monkeypatch.setattr(convert, "HfApi", OfflineApi)
    with pytest.raises(ConversionError, match="uploading .* to someone/van-b0 failed .*Network is unreachable"):
        push_folder(converted, "someone/van-b0")
    calls.clear()
    monkeypatch.setattr(convert, "HfApi", RecordingApi)
    assert push_folder(converted, "someone/van-b0").endswith("/commit/abc")
    assert calls == [
        ("token", "hf_test"),
        ("create", "someone/van-b0", False, True),
        ("upload", "someone/van-b0", ["README.md", "config.json", "model.safetensors"]),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in WITH_OFFICIAL_CODE if m != FAST])
def test_every_family_with_official_code_round_trips_through_hf_hub(name, tmp_path):
    ckpt = finite_official_checkpoint(name, tmp_path / "official.pth")
    result = convert_to_hub_folder(ckpt, name, tmp_path / "out")
    assert result.max_abs_diff <= 1e-6 * max(1.0, result.max_abs_logit)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architecture"] == name
