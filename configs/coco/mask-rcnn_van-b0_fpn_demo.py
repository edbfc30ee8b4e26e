# Mask R-CNN + VAN-B0 on the bundled COCO-layout demo set, on CPU in a few minutes.
_base_ = [
    "../_base_/models/mask-rcnn_vitzoo_fpn.py",
    "../_base_/datasets/coco_instance_demo.py",
    "../_base_/schedules/coco_demo.py",
    "../_base_/runtimes/detection.py",
]
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(model_name="vitzoo_van_b0", drop_path_rate=0.0),
    neck=dict(in_channels=[32, 64, 160, 256]),
)
