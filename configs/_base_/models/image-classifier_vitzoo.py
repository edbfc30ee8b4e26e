# mmpretrain's ImageClassifier over a vitzoo model's pooled features (the family's own final norm and pooling) and a
# linear head, trained as in DeiT / Swin: label smoothing 0.1 with Mixup 0.8 / CutMix 1.0. Leaf configs set the
# model, its width (head.in_channels) and drop path.
model = dict(
    type="ImageClassifier",
    backbone=dict(type="VitzooBackbone", model_name="vitzoo_biformer_t", pooled=True, drop_path_rate=0.1),
    neck=None,
    head=dict(
        type="LinearClsHead",
        num_classes=1000,
        in_channels=512,
        loss=dict(type="LabelSmoothLoss", label_smooth_val=0.1, mode="original"),
        init_cfg=dict(type="TruncNormal", layer="Linear", std=0.02, bias=0.0),
        cal_acc=False,
    ),
    train_cfg=dict(augments=[dict(type="Mixup", alpha=0.8), dict(type="CutMix", alpha=1.0)]),
)
