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
