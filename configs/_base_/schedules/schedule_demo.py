# A few minutes on a laptop CPU: the 160k recipe's optimizer, shortened.
_base_ = ["./schedule_160k.py"]
optim_wrapper = dict(optimizer=dict(lr=4e-4, weight_decay=0.01))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=20, end=300, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=300, val_interval=100)
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=50, max_keep_ckpts=2, save_last=True),
)
