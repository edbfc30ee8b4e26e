# VWFormer (varying-window attention decode head) over a vitzoo backbone, as the VW paper's ADE20K configs:
# 512 channels, one head, short cut, dropout 0.1, no auxiliary head. Leaf configs set the backbone and its channels.
norm_cfg = dict(type="SyncBN", requires_grad=True)
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=data_preprocessor,
    backbone=dict(type="VitzooBackbone", model_name="vitzoo_biformer_t", out_indices=(0, 1, 2, 3), drop_path_rate=0.1),
    decode_head=dict(
        type="VWFormerHead",
        in_channels=[64, 128, 256, 512],
        in_index=[0, 1, 2, 3],
        channels=512,
        num_heads=1,
        short_cut=True,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)
