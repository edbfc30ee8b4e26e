# A CPU-sized run of the ImageNet recipe's optimizer on the demo set: 10 epochs of 13 iterations, short warm-up.
_base_ = ["./imagenet_adamw_300e.py"]
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type="CosineAnnealingLR", eta_min=1e-5, by_epoch=True, begin=1, end=10),
]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=10)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=5, max_keep_ckpts=1))
