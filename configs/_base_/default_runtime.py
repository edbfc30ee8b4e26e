# Runtime shared by every vitzoo config: the vitzoo runner (atomic checkpoints, weights-only resume), local logs, and
# wandb behind one flag (use_wandb=True, project wandb_project; WANDB_MODE=offline works without network).
# runtimes/ adds each task's registry scope and visualizer; schedules/ add the hooks that follow the schedule.
custom_imports = dict(imports=["vitzoo.mm"], allow_failed_imports=False)
runner_type = "VitzooRunner"
# NCCL on GPUs; tools/train.py joins a gloo process group itself when torchrun starts it on a machine without CUDA.
env_cfg = dict(
    cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict(backend="nccl")
)
use_wandb = False
wandb_project = "vitzoo"
vis_backends = [dict(type="LocalVisBackend")]
log_level = "INFO"
load_from = None
resume = False
