# mmsegmentation: its registry scope and the segmentation visualizer (overlays through tools/visualize.py).
_base_ = ["../default_runtime.py"]
default_scope = "mmseg"
visualizer = dict(type="SegLocalVisualizer", vis_backends=[dict(type="LocalVisBackend")], name="visualizer")
