# mmpretrain: its registry scope and visualizer.
_base_ = ["../default_runtime.py"]
default_scope = "mmpretrain"
visualizer = dict(type="UniversalVisualizer", vis_backends=[dict(type="LocalVisBackend")])
