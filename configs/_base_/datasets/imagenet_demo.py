# The bundled ImageNet-layout demo set (python tools/make_demo_data.py --out data/demo): five shape classes, 64x64
# images, mmpretrain's ImageNet dataset class. Light augmentation: a CPU demo trains for a few epochs only.
_base_ = ["mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py"]
data_root = "data/demo/imagenet"
classes = data_root + "/classes.txt"
data_preprocessor = dict(num_classes=5)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="RandomResizedCrop", scale=64, crop_ratio_range=(0.5, 1.0), backend="pillow", interpolation="bicubic"),
    dict(type="RandomFlip", prob=0.5, direction="horizontal"),
    dict(type="PackInputs"),
]
test_pipeline = [dict(type="LoadImageFromFile"), dict(type="PackInputs")]
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, classes=classes, pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=25,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, classes=classes, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="Accuracy", topk=(1,))
test_evaluator = val_evaluator
