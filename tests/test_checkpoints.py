"""Official checkpoints: key layouts, timm's pretrained paths (file, Hugging Face Hub cache), and refusals."""

import argparse
import importlib
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from safetensors.torch import save_file
from test_models import DEPLOY_FAST
from timm.models._registry import model_entrypoint

import vitzoo  # noqa: F401
from vitzoo.hub import CheckpointError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "official_keys"
ALL_MODELS = timm.list_models("vitzoo_*")
# families whose authors released no weights (so no official layout to convert): their own layout is tested below
NO_OFFICIAL_RELEASE = ("vitzoo_halonet_", "vitzoo_swin_vsa_")
# integer index tables the official code stores as buffers and vitzoo computes from the window size instead
REBUILT_BUFFERS = ("relative_position_index", "RoPE.angle", "attn_mask")
# official parameters that the official forward never uses (FLatten-PVT builds a final norm it does not apply)
UNUSED_OFFICIAL = {"vitzoo_flatten_pvt_t": ("norm.weight", "norm.bias")}
OFFICIAL_MODELS = [m for m in ALL_MODELS if not m.startswith(NO_OFFICIAL_RELEASE)]


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name.removeprefix('vitzoo_')}.json").read_text())


def _filter_fn(name: str):
    return importlib.import_module(model_entrypoint(name).__module__).checkpoint_filter_fn


def random_official_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Fresh random tensors in the official key layout recorded from the official code."""
    out = {}
    for key, shape in _fixture(name)["keys"].items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.randint(0, 1000, shape)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape) + 0.5
        else:
            out[key] = torch.randn(shape)
    return out


def official_checkpoint(name: str) -> dict:
    """A checkpoint wrapped as the official release wraps it (VAN: timm train output with argparse args)."""
    fixture = _fixture(name)
    sd = random_official_state_dict(name)
    if fixture["checkpoint_wrapper"] == "state_dict":
        return {"epoch": 300, "arch": "van", "state_dict": sd, "args": argparse.Namespace(lr=1e-3, model="van")}
    return {fixture["checkpoint_wrapper"]: sd, "epoch": 299}


@pytest.mark.parametrize("name", OFFICIAL_MODELS)
def test_official_layout_maps_onto_every_key_and_shape(name):
    """Every variant, on the meta device: the filter output has exactly the model's keys and shapes."""
    with torch.device("meta"):
        model = timm.create_model(name)
    official = {k: torch.empty(s, device="meta") for k, s in _fixture(name)["keys"].items()}
    mapped = _filter_fn(name)(official, model)
    expected = model.state_dict()
    assert list(sorted(mapped)) == list(sorted(expected))
    assert all(mapped[k].shape == expected[k].shape for k in expected)
    # a bijection: nothing invented, and nothing dropped but the index buffers the models rebuild at run time
    rebuilt = [k for k in official if k.endswith(REBUILT_BUFFERS) or k in UNUSED_OFFICIAL.get(name, ())]
    assert len(official) - len(rebuilt) == len(expected)
    unused = sum(official[k].numel() for k in UNUSED_OFFICIAL.get(name, ()))
    assert sum(t.numel() for k, t in model.named_parameters()) == _fixture(name)["num_params"] - unused


@pytest.mark.parametrize("name,suffix", [("vitzoo_van_b0", ".pth.tar"), ("vitzoo_biformer_t", ".pth")])
def test_official_checkpoint_loads_strictly_through_timm_file_overlay(name, suffix, tmp_path):
    ckpt = official_checkpoint(name)
    path = tmp_path / f"official{suffix}"
    torch.save(ckpt, path)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    official = next(v for v in ckpt.values() if isinstance(v, dict))
    mapped = _filter_fn(name)(official, model)
    ours = model.state_dict()
    for key, value in mapped.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
    # the values really come from the file: the recorded official tensors were random
    first_official = next(iter(official.values()))
    assert any(torch.equal(first_official, t) for t in ours.values())


def test_num_classes_change_keeps_backbone_and_replaces_head(tmp_path):
    ckpt = official_checkpoint("vitzoo_van_b0")
    path = tmp_path / "van.pth.tar"
    torch.save(ckpt, path)
    model = timm.create_model(
        "vitzoo_van_b0", pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path))
    )
    assert model.head.weight.shape == (10, 256)
    torch.testing.assert_close(
        model.stages[2].blocks[1].attn.lka.conv0.weight,
        ckpt["state_dict"]["block3.1.attn.spatial_gating_unit.conv0.weight"],
    )


def test_own_layout_safetensors_round_trip(tmp_path, seed):
    src = timm.create_model("vitzoo_biformer_t").eval()
    path = tmp_path / "biformer.safetensors"
    save_file(src.state_dict(), str(path))
    dst = timm.create_model("vitzoo_biformer_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_missing_and_extra_keys_are_listed(tmp_path):
    ckpt = official_checkpoint("vitzoo_biformer_t")
    del ckpt["model"]["stages.2.3.attn.wo.weight"]
    ckpt["model"]["stages.2.3.attn.bogus"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(ckpt, path)
    with pytest.raises(
        CheckpointError, match=r"1 missing keys: stages\.2\.blocks\.3\.attn\.proj\.weight.*1 unexpected keys"
    ):
        timm.create_model("vitzoo_biformer_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_checkpoint_of_another_variant_reports_shapes(tmp_path):
    path = tmp_path / "b1.pth.tar"
    torch.save(official_checkpoint("vitzoo_van_b1"), path)
    with pytest.raises(CheckpointError, match="another variant"):
        timm.create_model("vitzoo_van_b2", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


class _Payload:
    """Unpickling this object would create a file: proof that code ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load weights .* could run code"):
        timm.create_model("vitzoo_van_b0", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_file_gets_a_clear_error(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    sd = timm.create_model("vitzoo_van_b0").state_dict()
    if suffix == ".pth":
        torch.save(sd, good)
    else:
        save_file(sd, str(good))
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="corrupt"):
        timm.create_model("vitzoo_van_b0", pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))


def _populate_hf_cache(cache: pathlib.Path, repo_id: str, files: dict[str, bytes]) -> None:
    """Lay files out as huggingface_hub's cache does: models--org--name/{refs/main, snapshots/<sha>/...}."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(sha)
    snap = root / "snapshots" / sha
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)


def test_hugging_face_hub_paths_offline(tmp_path):
    """Default-cfg Hub weights (official layout) and an ``hf-hub:`` repo (timm layout), from a cache, offline."""
    cache = tmp_path / "hub"
    official = tmp_path / "van_tiny_754.pth.tar"
    ckpt = official_checkpoint("vitzoo_van_b0")
    torch.save(ckpt, official)
    _populate_hf_cache(cache, "Visual-Attention-Network/VAN-Tiny-original", {official.name: official.read_bytes()})
    saved = tmp_path / "saved"
    timm.models.save_for_hf(timm.create_model("vitzoo_biformer_t", num_classes=5), str(saved), safe_serialization=True)
    _populate_hf_cache(cache, "vitzoo-test/biformer-t-5cls", {p.name: p.read_bytes() for p in saved.iterdir()})
    torch.save(ckpt["state_dict"]["head.weight"], tmp_path / "head.pt")
    script = textwrap.dedent(
        f"""
        import timm, torch, vitzoo
        from safetensors.torch import load_file
        van = timm.create_model('vitzoo_van_b0.official_in1k', pretrained=True)
        assert torch.equal(van.head.weight, torch.load({str(tmp_path / "head.pt")!r}))
        bif = timm.create_model('hf-hub:vitzoo-test/biformer-t-5cls', pretrained=True)
        ref = load_file({str(saved / "model.safetensors")!r})
        assert bif.head.weight.shape == (5, 512)
        assert all(torch.equal(bif.state_dict()[k], v) for k, v in ref.items())
        print('hub ok')
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hub ok" in result.stdout


@pytest.mark.parametrize(
    "name, where",
    [
        ("vitzoo_crossformer_t", r"https://drive\.google\.com/file/d/1YSkU9enn-ITyrbxLH13zNcBYvWSEidfq/view"),
        ("vitzoo_agent_swin_t", r"https://cloud\.tsinghua\.edu\.cn/f/"),
        ("vitzoo_vitaev2_vsa_b", "never published"),
    ],
)
def test_pretrained_without_a_downloadable_file_names_the_page_and_the_call(name, where, monkeypatch):
    """A cfg whose weights are a share page (or none) refuses pretrained=True before building or downloading, where
    timm would warn and return random weights."""
    from vitzoo.hub import WeightsUnavailable

    def no_download(*args, **kwargs):
        raise AssertionError("a download was tried")

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", no_download)
    call = re.escape(f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file='PATH'))")
    with pytest.raises(
        WeightsUnavailable, match=f"{name}: pretrained=True has no file a program can download.*{where}"
    ):
        timm.create_model(name, pretrained=True)
    with pytest.raises(WeightsUnavailable, match=call):
        timm.create_model(name, pretrained=True)


@pytest.fixture
def weights_server():
    """An HTTP server on 127.0.0.1: ``/page.pth`` answers with an HTML page (a share page's reply), anything else
    with 404."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/page.pth":
                body = b"<!DOCTYPE html><html><body>Sign in to download</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404, "Not Found")

        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_a_dead_or_html_weight_link_is_a_clear_error(weights_server, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = "vitzoo_swin_vsa_t"
    with pytest.raises(CheckpointError, match=r"from http://127\.0\.0\.1:\d+/gone\.pth: HTTP 404 .*dead.*dict\(file="):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(url=f"{weights_server}/gone.pth"))
    with pytest.raises(CheckpointError, match=r"page\.pth returned a web page \(HTML\), not a checkpoint.*removed"):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(url=f"{weights_server}/page.pth"))
    assert not list((tmp_path / "torch").rglob("page.pth"))  # the page is not left in the cache to be read again


def _role(key: str) -> str:
    """A key with its indices blanked: what the tensor is inside its block (``stages.#.blocks.#.norm#.weight``)."""
    return re.sub(r"\d+", "#", key)


def _indices(key: str) -> tuple[int, ...]:
    return tuple(int(i) for i in re.findall(r"\d+", key))


PLACEMENT_MODELS = [m for m in DEPLOY_FAST if not m.startswith(NO_OFFICIAL_RELEASE)]
PLACEMENT_MODELS += [pytest.param(m, marks=pytest.mark.slow) for m in OFFICIAL_MODELS if m not in PLACEMENT_MODELS]


@pytest.mark.parametrize("name", PLACEMENT_MODELS)
def test_each_official_tensor_lands_once_as_the_same_attribute_in_the_official_block_order(name, seed):
    """Distinct random values per official key, followed through the filter, over every key that arrives unchanged:

    - each lands on exactly one key of the model, and as the same attribute (a weight as a weight, a running mean
      as a running mean: a BatchNorm's statistics cannot trade places with its affine parameters);
    - keys of one role (the key with its indices blanked) keep their official order (stage, then block): two blocks
      or two stages swapped by the filter break it.

    Same-shaped tensors of one block (norm1 / norm2, CSWin's two LePE convs) are told apart by the family tests
    (``test_cswin.py``) and by the float64 check against the official code (``benchmarks/results``).
    """
    fixture = _fixture(name)
    official = {
        k: torch.randint(0, 1000, s) if k.endswith("num_batches_tracked") else torch.randn(s)
        for k, s in fixture["keys"].items()
    }
    with torch.device("meta"):
        model = timm.create_model(name)
    mapped = _filter_fn(name)({fixture["checkpoint_wrapper"]: official}, model)
    by_shape: dict[tuple, list[str]] = {}
    for key, tensor in mapped.items():
        by_shape.setdefault((tuple(tensor.shape), tensor.dtype), []).append(key)
    landed = {}
    for key, tensor in official.items():
        if key.endswith("num_batches_tracked"):
            continue
        hits = [k for k in by_shape.get((tuple(tensor.shape), tensor.dtype), []) if torch.equal(mapped[k], tensor)]
        assert len(hits) <= 1, f"{key} landed on {hits}"
        if hits:  # else resized or rebuilt on the way (index buffers, tables of another resolution)
            landed[key] = hits[0]
    assert len(landed) >= 0.8 * len(official), "most official tensors arrive unchanged"

    def attribute(key: str) -> str:  # PVT numbers its per-stage tables (pos_embed1): the stage is in our path
        return re.sub(r"\d+$", "", key.rsplit(".", 1)[-1])

    renamed = {k: o for k, o in landed.items() if attribute(k) != attribute(o)}
    assert not renamed, f"official tensors land as another attribute: {renamed}"
    roles = {_role(k) for k in landed}
    for role in roles:
        keys = sorted((k for k in landed if _role(k) == role), key=_indices)
        order = [_indices(landed[k]) for k in keys]
        assert order == sorted(order), f"{role}: official order {keys} lands as {[landed[k] for k in keys]}"
