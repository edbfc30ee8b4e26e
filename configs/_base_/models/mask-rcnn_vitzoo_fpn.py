# mmdet's Mask R-CNN + FPN with a vitzoo backbone in place of ResNet-50; leaf configs set the backbone, its drop
# path and the FPN's in_channels.
_base_ = ["mmdet::_base_/models/mask-rcnn_r50_fpn.py"]
model = dict(
    backbone=dict(
        _delete_=True,
        type="VitzooBackbone",
        model_name="vitzoo_biformer_t",
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
    ),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
