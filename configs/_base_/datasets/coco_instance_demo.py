# The bundled COCO-layout demo set (python tools/make_demo_data.py --out data/demo): 128x128 scenes with five shape
# categories under their COCO ids, polygons for masks, read by mmdet's CocoDataset and scored by CocoMetric.
_base_ = ["mmdet::_base_/datasets/coco_instance.py"]
data_root = "data/demo/coco/"
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="Resize", scale=(128, 128), keep_ratio=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(128, 128), keep_ratio=True),  # identity here; records the scale_factor predictions need
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline),
)
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=test_pipeline)
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + "annotations/instances_val2017.json")
test_evaluator = val_evaluator
