# A CPU-sized run of the COCO AdamW recipe on the demo set: 6 epochs of 30 iterations, lr x0.1 for the last one.
_base_ = ["./coco_adamw_1x.py"]
optim_wrapper = dict(optimizer=dict(lr=4e-4))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type="MultiStepLR", begin=0, end=6, by_epoch=True, milestones=[5], gamma=0.1),
]
train_cfg = dict(max_epochs=6, val_interval=6)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=3, max_keep_ckpts=1))
