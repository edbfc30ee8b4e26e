# VWFormer + BiFormer-T on the bundled ADE20K-layout demo set (`make demo`): a few minutes on a 2-core CPU, from
# random initialisation. The head is narrowed to 128 channels for the CPU; everything else is the paper's head.
_base_ = [
    "../_base_/models/vwformer_vitzoo.py",
    "../_base_/datasets/ade20k_demo.py",
    "../_base_/schedules/schedule_demo.py",
    "../_base_/runtimes/segmentation.py",
]
norm_cfg = dict(type="BN", requires_grad=True)  # one process on CPU: no SyncBN
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(model_name="vitzoo_biformer_t"),
    decode_head=dict(in_channels=[64, 128, 256, 512], channels=128, norm_cfg=norm_cfg),
)
