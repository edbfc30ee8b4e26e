# BiFormer-T classifier on the bundled ImageNet-layout demo set (five shape classes, 64x64), on CPU in a few minutes.
_base_ = [
    "../_base_/models/image-classifier_vitzoo.py",
    "../_base_/datasets/imagenet_demo.py",
    "../_base_/schedules/imagenet_demo.py",
    "../_base_/runtimes/classification.py",
]
model = dict(
    backbone=dict(model_name="vitzoo_biformer_t", drop_path_rate=0.0),
    head=dict(num_classes=5, in_channels=512, cal_acc=True),
    train_cfg=dict(_delete_=True),  # no Mixup / CutMix for a run this short
)
