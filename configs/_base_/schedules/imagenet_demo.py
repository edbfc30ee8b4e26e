# A CPU-sized run of the ImageNet recipe's optimizer on the demo set: 8 epochs of 13 iterations, short warm-up.
_base_ = ["./imagenet_adamw_300e.py"]
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type="CosineAnnealingLR", eta_min=1e-5, by_epoch=True, begin=1, end=8),
]
train_cfg = dict(by_epoch=True, max_epochs=8, val_interval=8)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=4, max_keep_ckpts=1))
