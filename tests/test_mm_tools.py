"""tools/train.py and tools/test.py: config checks that fail fast, and the vitzoo runner's checkpoint handling."""

import pathlib
import sys

import pytest
import torch

pytest.importorskip("mmseg", reason="the mm extra is not installed")

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from _mm_common import ConfigError, load_config  # noqa: E402

DEMO = str(ROOT / "configs" / "ade20k" / "upernet_biformer-t_demo.py")


def _existing_root(tmp_path) -> list[str]:
    root = tmp_path / "ade"
    root.mkdir(exist_ok=True)
    return [f"{s}.dataset.data_root={root}" for s in ("train_dataloader", "val_dataloader", "test_dataloader")]


def test_unknown_cfg_option_is_named_with_close_matches(tmp_path):
    with pytest.raises(ConfigError, match=r"has no key 'max_iter' \(did you mean max_iters"):
        load_config(DEMO, ["train_cfg.max_iter=5", *_existing_root(tmp_path)], str(tmp_path), "none")
    cfg = load_config(DEMO, ["train_cfg.max_iters=5", *_existing_root(tmp_path)], str(tmp_path), "none")
    assert cfg.train_cfg.max_iters == 5 and cfg.work_dir == str(tmp_path)


def test_missing_dataset_folder_says_how_to_create_it(tmp_path):
    with pytest.raises(ConfigError, match="does not exist. Create the bundled demo data"):
        load_config(DEMO, [f"train_dataloader.dataset.data_root={tmp_path / 'nowhere'}"], None, "none")


def test_backbone_head_channel_mismatch_gives_the_right_channels(tmp_path):
    with pytest.raises(ConfigError, match=r"in_channels is \[96, 192, 384, 768\] but vitzoo_biformer_t .* gives "):
        load_config(DEMO, ["model.decode_head.in_channels=[96,192,384,768]", *_existing_root(tmp_path)], None, "none")


def test_runner_writes_checkpoints_atomically_and_resumes_weights_only(tmp_path):
    """A tiny runner: its checkpoint holds mmengine's log buffers and numpy data, yet loads with weights_only."""
    from mmengine.model import BaseModel

    import vitzoo.mm  # noqa: F401
    from vitzoo.mm.runner import VitzooRunner

    class Tiny(BaseModel):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def forward(self, inputs, data_samples=None, mode="tensor"):
            out = self.w(inputs)  # default_collate already stacked the batch
            return dict(loss=out.square().mean()) if mode == "loss" else out

    data = [dict(inputs=torch.randn(2)) for _ in range(8)]
    common = dict(
        model=Tiny(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=data,
            sampler=dict(type="DefaultSampler", shuffle=False),
            batch_size=2,
            collate_fn=dict(type="default_collate"),
        ),  # fmt: skip
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)),
    )
    runner = VitzooRunner(**common, experiment_name="first")
    runner.train()
    assert (tmp_path / "epoch_2.pth").is_file() and not list(tmp_path.glob("*.tmp"))
    weights = runner.model.w.weight.detach().clone()
    resumed = VitzooRunner(**dict(common, model=Tiny(), train_cfg=dict(by_epoch=True, max_epochs=3)),
                           experiment_name="second", resume=True)  # fmt: skip
    resumed.train()
    assert resumed.epoch == 3  # continued after epoch 2 instead of starting over
    # the file is plain data: torch's safe loader reads it with no allowlist, and the log history survived
    ckpt = torch.load(tmp_path / "epoch_2.pth", weights_only=True)
    assert ckpt["message_hub"]["log_scalars"]["train/loss"]["log"].numel() == 8  # 2 epochs x 4 iterations
    assert not torch.equal(weights, resumed.model.w.weight)
    assert len(resumed.message_hub.get_scalar("train/loss").data[0]) == 12  # the resumed run extended the history


def _tiny_run_options(data_root: str, work_dir: pathlib.Path, max_iters: int) -> list[str]:
    """UPerNet + VAN-B0 on the demo set, small and deterministic enough for a test."""
    roots = [f"{s}.dataset.data_root={data_root}" for s in ("train_dataloader", "val_dataloader", "test_dataloader")]
    return [
        "--work-dir", str(work_dir), "--cfg-options", *roots,
        "model.backbone.model_name=vitzoo_van_b0", "model.decode_head.in_channels=[32,64,160,256]",
        "model.auxiliary_head.in_channels=160",
        f"train_cfg.max_iters={max_iters}", f"train_cfg.val_interval={max_iters}",
        "default_hooks.checkpoint.interval=2", "default_hooks.checkpoint.max_keep_ckpts=10",
        "train_dataloader.batch_size=2", "default_hooks.logger.interval=1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def demo_ade(tmp_path_factory) -> str:
    from make_demo_data import make_demo_data

    out = tmp_path_factory.mktemp("demo")
    return str(make_demo_data(out, which=("ade20k",), scale=0.1)["ade20k"])


def test_killed_run_resumes_from_its_last_checkpoint(demo_ade, tmp_path):
    """Kill a real training process after its second checkpoint, resume it, and check it continues, not restarts."""
    import json
    import signal
    import subprocess
    import time

    work = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), DEMO, *_tiny_run_options(demo_ade, work, 8)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (work / "iter_4.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (work / "iter_4.pth").is_file() and not (work / "iter_8.pth").exists()
    assert (work / "last_checkpoint").read_text().strip().endswith(("iter_4.pth", "iter_6.pth"))
    resumed = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (work / "iter_8.pth").is_file() and not list(work.glob("*.tmp"))
    # the resumed process trained only the iterations that were missing and then evaluated mIoU
    logs = sorted(work.glob("*/vis_data/scalars.json"))[-1].read_text().splitlines()
    iters = [json.loads(line)["step"] for line in logs if '"loss"' in line]
    assert iters and min(iters) > 4 and max(iters) == 8, iters
    assert any("mIoU" in line for line in logs)
    # the final mIoU is the resumed run's evaluation at iteration 8, as `make demo` prints it
    from final_metric import final_metric

    step, miou, _ = final_metric(work)
    assert step == 8 and 0.0 <= miou <= 100.0
    # the finished checkpoint draws overlays: captioned image | ground truth | prediction panels
    from PIL import Image
    from visualize import main as visualize

    options = _tiny_run_options(demo_ade, work, 8)[3:]  # the --cfg-options values
    assert (
        visualize(
            [DEMO, str(work / "iter_8.pth"), "--num", "1", "--out", str(tmp_path / "png"), "--cfg-options", *options]
        )
        == 0
    )
    (png,) = (tmp_path / "png").glob("*.png")
    assert Image.open(png).size == (3 * 128, 16 + 128)
    # the middle panel is the test-set annotation (reduce_zero_label as the test pipeline loads it) over the image
    import numpy as np
    from _mm_common import load_config
    from mmseg.datasets import ADE20KDataset
    from visualize import blend, ground_truth

    cfg = load_config(DEMO, options, None, "none")
    root = pathlib.Path(demo_ade)
    image_path = sorted((root / "images" / "validation").glob("*.jpg"))[0]
    truth = ground_truth(cfg, image_path)
    raw = np.asarray(Image.open(root / "annotations" / "validation" / f"{image_path.stem}.png"))
    assert truth is not None and ((truth == 255) == (raw == 0)).all() and (truth[raw > 0] == raw[raw > 0] - 1).all()
    image = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float64)
    palette = np.array(ADE20KDataset.METAINFO["palette"], dtype=np.float64)
    panels = np.asarray(Image.open(png))
    assert (panels[16:, 128:256] == blend(image, truth, palette, 0.5)).all()


DDP_CONFIG = """
_base_ = [{demo!r}]
norm = dict(type="GN", num_groups=8, requires_grad=True)  # per-sample statistics: no cross-rank BatchNorm effects
model = dict(
    backbone=dict(model_name="vitzoo_agent_pvt_t", drop_path_rate=0.0),
    decode_head=dict(in_channels=[64, 128, 320, 512], channels=32, norm_cfg=norm, dropout_ratio=0.0),
    auxiliary_head=None,
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="Resize", scale=(64, 64), keep_ratio=False),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size={batch}, sampler=dict(type="InfiniteSampler", shuffle=False),
    dataset=dict(data_root={root!r}, pipeline=train_pipeline),
)
val_dataloader = dict(dataset=dict(data_root={root!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=3, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=3), logger=dict(interval=1))
randomness = dict(seed=0)
"""


def test_two_process_ddp_matches_one_process_with_the_same_total_batch(demo_ade, tmp_path):
    """torchrun, gloo on CPU: 2 processes x batch 2 take the same three steps as 1 process x batch 4."""
    import subprocess

    states = {}
    for name, procs, batch in (("single", 1, 4), ("ddp", 2, 2)):
        cfg = tmp_path / f"{name}.py"
        cfg.write_text(DDP_CONFIG.format(demo=DEMO, batch=batch, root=demo_ade))
        work = tmp_path / name
        train = [str(ROOT / "tools" / "train.py"), str(cfg), "--work-dir", str(work)]
        if procs == 1:
            cmd = [sys.executable, *train]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
                   *train, "--launcher", "pytorch"]  # fmt: skip
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        states[name] = torch.load(work / "iter_3.pth", weights_only=True)["state_dict"]
    moved = 0
    for key, value in states["single"].items():
        if value.is_floating_point():
            torch.testing.assert_close(states["ddp"][key], value, atol=2e-5, rtol=1e-4, msg=key)
            moved += 1
    assert moved > 100


def test_wandb_offline_run_writes_its_files_and_no_code_snapshot(demo_ade, tmp_path):
    """use_wandb=True with WANDB_MODE=offline: the run's wandb files are written locally, without network."""
    import os
    import subprocess

    pytest.importorskip("wandb")
    work = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        DEMO,
        *_tiny_run_options(demo_ade, work, 2),
        "use_wandb=True",
    ]
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true")
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = list(work.glob("*/vis_data/wandb/offline-run-*"))
    assert runs and list(runs[0].glob("run-*.wandb")), sorted(str(p) for p in work.rglob("*"))[:20]
    assert not list(runs[0].rglob("code/*.py"))  # the config is logged, the source tree is not copied


@pytest.fixture(scope="module")
def demo_sets(tmp_path_factory) -> dict[str, str]:
    from make_demo_data import make_demo_data

    out = tmp_path_factory.mktemp("demo_cls_det")
    return {k: str(v) for k, v in make_demo_data(out, which=("imagenet", "coco"), scale=0.2).items()}


def _train(config: str, work: pathlib.Path, options: list[str], cwd: pathlib.Path) -> list[dict]:
    """Run tools/train.py in a fresh process; return the logged scalars (json lines)."""
    import json
    import subprocess

    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), config, "--work-dir", str(work), "--cfg-options", *options]
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(line) for line in sorted(work.glob("*/vis_data/scalars.json"))[-1].read_text().splitlines()]


def test_imagenet_demo_trains_and_scores_accuracy_on_the_whole_val_set(demo_sets, tmp_path):
    """mmpretrain's ImageClassifier over a pooled vitzoo backbone: one epoch, then Accuracy over the val split."""
    root = demo_sets["imagenet"]
    n_val = sum(1 for _ in pathlib.Path(root, "meta", "val.txt").open())
    options = [
        *(f"{s}.dataset.data_root={root}" for s in ("train_dataloader", "val_dataloader", "test_dataloader")),
        *(f"{s}.dataset.classes={root}/classes.txt" for s in ("train_dataloader", "val_dataloader", "test_dataloader")),
        "train_cfg.max_epochs=1", "train_cfg.val_interval=1", "train_dataloader.batch_size=8",
        "default_hooks.logger.interval=1", "default_hooks.checkpoint.interval=1",
    ]  # fmt: skip
    logs = _train(str(ROOT / "configs" / "imagenet" / "biformer-t_demo.py"), tmp_path / "run", options, tmp_path)
    losses = [r["loss"] for r in logs if "loss" in r]
    assert len(losses) == 40 // 8 and all(0 < x < 10 for x in losses)  # one epoch of the 40 training images
    (top1,) = [r["accuracy/top1"] for r in logs if "accuracy/top1" in r]
    assert 0 <= top1 <= 100 and abs(top1 * n_val / 100 - round(top1 * n_val / 100)) < 1e-6  # k of n_val right
    assert (tmp_path / "run" / "epoch_1.pth").is_file()


def test_coco_demo_trains_mask_rcnn_and_scores_coco_metric(demo_sets, tmp_path):
    """Mask R-CNN + VAN-B0 on the COCO-layout demo set: one epoch, then CocoMetric (bbox and segm) on val."""
    root = demo_sets["coco"] + "/"
    options = [
        *(f"{s}.dataset.data_root={root}" for s in ("train_dataloader", "val_dataloader", "test_dataloader")),
        f"val_evaluator.ann_file={root}annotations/instances_val2017.json",
        f"test_evaluator.ann_file={root}annotations/instances_val2017.json",
        "train_cfg.max_epochs=1", "train_cfg.val_interval=1", "default_hooks.logger.interval=1",
        "default_hooks.checkpoint.interval=1", "model.train_cfg.rcnn.sampler.num=32",
        "model.test_cfg.rcnn.score_thr=0.0",  # six steps from scratch score low: keep every detection for the metric
    ]  # fmt: skip
    logs = _train(str(ROOT / "configs" / "coco" / "mask-rcnn_van-b0_fpn_demo.py"), tmp_path / "run", options, tmp_path)
    train = [r for r in logs if "loss_mask" in r]
    assert train and all(r["loss"] > 0 for r in train)
    (val,) = [r for r in logs if "coco/bbox_mAP" in r]
    assert -1 <= val["coco/bbox_mAP"] <= 1 and -1 <= val["coco/segm_mAP"] <= 1
    assert (tmp_path / "run" / "epoch_1.pth").is_file()


def test_get_flops_counts_the_whole_model_and_its_backbone_as_vitzoo_stats_does():
    import timm
    from get_flops import count

    from vitzoo.stats import count_gmacs

    result = count(str(ROOT / "configs" / "ade20k" / "vwformer_biformer-t_demo.py"), 128, 192)
    backbone = timm.create_model("vitzoo_biformer_t", features_only=True)
    assert result["backbone_params_m"] == pytest.approx(sum(p.numel() for p in backbone.parameters()) / 1e6, abs=1e-3)
    assert result["backbone_gmacs"] == pytest.approx(count_gmacs(backbone, (128, 192)), abs=1e-3)
    # the head adds its own cost; the whole model costs more than the backbone, and both scale with the input
    assert result["params_m"] > result["backbone_params_m"] and result["gmacs"] > result["backbone_gmacs"]
    bigger = count(str(ROOT / "configs" / "ade20k" / "vwformer_biformer-t_demo.py"), 256, 384)
    assert bigger["gmacs"] == pytest.approx(4 * result["gmacs"], rel=0.05)


def test_benchmark_times_predict_for_detection_and_classification(capsys):
    import json

    from benchmark import main as benchmark

    for config in ("coco/mask-rcnn_van-b0_fpn_demo.py", "imagenet/biformer-t_demo.py"):
        assert benchmark([str(ROOT / "configs" / config), "--shape", "96", "128", "--iters", "2", "--warmup", "1",
                          "--batch", "2", "--json"]) == 0  # fmt: skip
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["shape"] == [96, 128] and result["batch"] == 2 and result["device"] == "cpu"
        assert result["images_per_s"] > 0 and result["ms_per_image"] == pytest.approx(
            2000 / result["images_per_s"] / 2, rel=0.01
        )
