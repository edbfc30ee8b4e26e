"""One OpenMMLab backbone class for every ``vitzoo_*`` timm model: ``dict(type='VitzooBackbone', model_name=...)``.

The wrapped network is ``timm.create_model(model_name, features_only=True, out_indices=...)``, so mmsegmentation,
mmdetection and mmpretrain get the same feature maps (NCHW, strides 4-32, or 16 for the DeiT hosts) as timm users.
Pretrained weights come through timm's loader and the family's ``checkpoint_filter_fn`` (official layouts converted,
tables resized, only tensors loaded): ``init_cfg=dict(type='Pretrained', checkpoint=<file or 'timm'>)``, where
``'timm'`` means the model's default pretrained tag.
"""

from __future__ import annotations

import timm
import torch
import torch.nn as nn
from mmengine.model import BaseModule

__all__ = ["VitzooBackbone"]


class VitzooBackbone(BaseModule):
    """A vitzoo model as an OpenMMLab backbone returning a tuple of feature maps.

    Args:
        model_name: A registered ``vitzoo_*`` model (``vitzoo list``).
        out_indices: Which feature levels to return (``feature_info`` indices).
        frozen_stages: Freeze the stem and the first ``frozen_stages`` levels (``-1``: nothing), as mm backbones do.
        norm_eval: Keep BatchNorm layers in eval mode while training (frozen statistics).
        drop_path_rate: Stochastic depth of the backbone.
        img_size: The size the model's resolution-tied tables are built for (default: the model's own).
        model_kwargs: Further ``timm.create_model`` arguments.
        init_cfg: ``dict(type='Pretrained', checkpoint=path | 'timm')`` loads weights when the detector /
            segmentor initialises its weights.
    """

    def __init__(
        self,
        model_name: str,
        out_indices: tuple[int, ...] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        drop_path_rate: float = 0.0,
        img_size: int | tuple[int, int] | None = None,
        model_kwargs: dict | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__(init_cfg=None)
        if not model_name.startswith("vitzoo_") or model_name not in timm.list_models("vitzoo_*"):
            raise ValueError(
                f"VitzooBackbone: unknown model {model_name!r}; valid names are the registered vitzoo models "
                f"(`vitzoo list`), e.g. {timm.list_models('vitzoo_*')[:3]}"
            )
        self.model_name, self.frozen_stages, self.norm_eval = model_name, frozen_stages, norm_eval
        self.pretrained = self._check_init_cfg(init_cfg)
        self.create_kwargs = dict(model_kwargs or {}, out_indices=tuple(out_indices), drop_path_rate=drop_path_rate)
        if img_size is not None:
            self.create_kwargs["img_size"] = img_size
        self.model = timm.create_model(model_name, features_only=True, **self.create_kwargs)
        self.out_channels = self.model.feature_info.channels()
        self.strides = self.model.feature_info.reduction()
        self._freeze()

    @staticmethod
    def _check_init_cfg(init_cfg: dict | None) -> str | None:
        if init_cfg is None:
            return None
        if not isinstance(init_cfg, dict) or init_cfg.get("type") != "Pretrained" or "checkpoint" not in init_cfg:
            raise ValueError(
                "VitzooBackbone: init_cfg must be None or dict(type='Pretrained', checkpoint=<file path or 'timm'>), "
                f"got {init_cfg!r}"
            )
        return init_cfg["checkpoint"]

    def init_weights(self) -> None:
        """Load the pretrained weights named by ``init_cfg`` (converted by the family's checkpoint filter)."""
        if self.pretrained is None:
            return
        overlay = {} if self.pretrained == "timm" else dict(pretrained_cfg_overlay=dict(file=str(self.pretrained)))
        loaded = timm.create_model(
            self.model_name, features_only=True, pretrained=True, **overlay, **self.create_kwargs
        )
        self.model.load_state_dict(loaded.state_dict())
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        """The modules that run before feature level ``frozen_stages + 1``: stem, stages / blocks up to it."""
        if self.frozen_stages < 0:
            return []
        infos = self.model.feature_info.info
        stop = infos[self.frozen_stages + 1]["module"] if self.frozen_stages + 1 < len(infos) else None
        out = []
        for name, child in self.model.model.named_children():
            if name in ("stages", "blocks"):
                for i, sub in enumerate(child):
                    if f"{name}.{i}" == stop:
                        return out
                    out.append(sub)
            elif name not in ("norm", "head", "head_drop"):
                out.append(child)
        return out

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad = False
        if self.frozen_stages >= 0:  # parameters that are not modules (class token, position embedding)
            for p in self.model.model.parameters(recurse=False):
                p.requires_grad = False

    def train(self, mode: bool = True) -> VitzooBackbone:
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(x))
