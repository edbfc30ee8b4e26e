# ImageNet-1k from scratch, the DeiT / Swin recipe most of these papers train with: AdamW (lr 1e-3 for a total batch
# of 1024, weight decay 0.05, none on norms / biases / tables), 300 epochs of cosine decay after a linear warm-up.
# Leaf configs set what their paper changes (lr, warm-up, gradient clipping, epochs).
_base_ = ["mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py"]
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=100),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="VisualizationHook", enable=False),
)
log_processor = dict(by_epoch=True)
