# Runtime shared by every vitzoo config: the vitzoo runner (atomic checkpoints, weights-only resume), local logs,
# and wandb behind one flag (use_wandb=True, project wandb_project; WANDB_MODE=offline works without network).
custom_imports = dict(imports=["vitzoo.mm"], allow_failed_imports=False)
runner_type = "VitzooRunner"
env_cfg = dict(
    cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict(backend="gloo")
)
use_wandb = False
wandb_project = "vitzoo"
vis_backends = [dict(type="LocalVisBackend")]
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
