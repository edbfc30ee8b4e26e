# A few minutes on a 2-core CPU: the 160k recipe's optimizer, shortened (120 iterations of batch 4 from scratch
# reach about 40 mIoU on the demo set's classes).
_base_ = ["./schedule_160k.py"]
optim_wrapper = dict(optimizer=dict(lr=4e-4, weight_decay=0.01))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=10, end=120, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=120, val_interval=120)
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=40, max_keep_ckpts=2, save_last=True),
)
