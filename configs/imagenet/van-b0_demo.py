# VAN-B0 classifier on the bundled ImageNet-layout demo set (five shape classes), on CPU in about a minute.
_base_ = [
    "../_base_/models/image-classifier_vitzoo.py",
    "../_base_/datasets/imagenet_demo.py",
    "../_base_/schedules/imagenet_demo.py",
    "../_base_/runtimes/classification.py",
]
model = dict(
    backbone=dict(model_name="vitzoo_van_b0", drop_path_rate=0.0),
    head=dict(num_classes=5, in_channels=256, cal_acc=True),
    train_cfg=dict(_delete_=True),  # no Mixup / CutMix for a run this short
)
