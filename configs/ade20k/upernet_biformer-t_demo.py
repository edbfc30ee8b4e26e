# UPerNet + BiFormer-T on the bundled ADE20K-layout demo set, on CPU in a few minutes.
_base_ = [
    "../_base_/models/upernet_vitzoo.py",
    "../_base_/datasets/ade20k_demo.py",
    "../_base_/schedules/schedule_demo.py",
    "../_base_/runtimes/segmentation.py",
]
norm_cfg = dict(type="BN", requires_grad=True)  # one process on CPU: no SyncBN
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(model_name="vitzoo_biformer_t"),
    decode_head=dict(in_channels=[64, 128, 256, 512], channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=64, norm_cfg=norm_cfg),
)
