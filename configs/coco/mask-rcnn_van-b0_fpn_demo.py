# Mask R-CNN + VAN-B0 on the bundled COCO-layout demo set, on CPU. The demo images are 128x128 with 1-4 objects, so
# the RoI heads sample 128 proposals per image instead of 512 (RoIAlign's backward dominates a CPU step).
_base_ = [
    "../_base_/models/mask-rcnn_vitzoo_fpn.py",
    "../_base_/datasets/coco_instance_demo.py",
    "../_base_/schedules/coco_demo.py",
    "../_base_/runtimes/detection.py",
]
model = dict(
    backbone=dict(model_name="vitzoo_van_b0", drop_path_rate=0.0),
    neck=dict(in_channels=[32, 64, 160, 256]),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300), rcnn=dict(sampler=dict(num=128))),
)
