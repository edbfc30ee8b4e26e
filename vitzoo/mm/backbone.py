"""One OpenMMLab backbone class for every ``vitzoo_*`` timm model: ``dict(type='VitzooBackbone', model_name=...)``.

The wrapped network is ``timm.create_model(model_name, features_only=True, out_indices=...)``, so mmsegmentation,
mmdetection and mmpretrain get the same feature maps (NCHW, strides 4-32, or 16 for the DeiT hosts) as timm users.
With ``pooled=True`` it is the classifier without its last linear layer instead: one pooled, normalised feature
vector per image (the model's own final norm and pooling, which differ between families), for mmpretrain's
``ImageClassifier`` with a ``LinearClsHead`` and no neck.
Pretrained weights come through timm's loader and the family's ``checkpoint_filter_fn`` (official layouts converted,
tables resized, only tensors loaded): ``init_cfg=dict(type='Pretrained', checkpoint=<file or 'timm'>)``, where
``'timm'`` means the model's default pretrained tag.
"""

from __future__ import annotations

import timm
import torch
import torch.nn as nn
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d

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
        out_norm: Add a LayerNorm over channels to every returned map, as the official detection / segmentation
            backbones of the Swin-style families do (CSWin, BiFormer, MALA, Swin hosts); new, randomly initialised
            parameters that the classification checkpoints do not hold.
        pooled: Return ``(features,)`` with features ``[B, num_features]`` (the classifier's pre-logits) instead of
            feature maps; ``out_indices`` is then unused.
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
        out_norm: bool = False,
        pooled: bool = False,
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
        self.pooled = pooled
        layout = dict(num_classes=0) if pooled else dict(features_only=True, out_indices=tuple(out_indices))
        self.create_kwargs = dict(model_kwargs or {}, **layout, drop_path_rate=drop_path_rate)
        if img_size is not None:
            self.create_kwargs["img_size"] = img_size
        self.model = timm.create_model(model_name, **self.create_kwargs)
        if pooled:
            self.out_channels, self.strides = [self.model.num_features], [None]
        else:
            self.out_channels = self.model.feature_info.channels()
            self.strides = self.model.feature_info.reduction()
        if out_norm and pooled:
            raise ValueError("VitzooBackbone: out_norm applies to feature maps; pooled=True returns a vector")
        self.out_norms = nn.ModuleList(LayerNorm2d(c) for c in self.out_channels) if out_norm else None
        self._freeze()

    @property
    def network(self) -> nn.Module:
        """The timm model itself (inside the feature extractor's wrapper when ``pooled`` is off)."""
        return self.model if self.pooled else self.model.model

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
        loaded = timm.create_model(self.model_name, pretrained=True, **overlay, **self.create_kwargs)
        self.model.load_state_dict(loaded.state_dict())
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        """The modules that run before feature level ``frozen_stages + 1``: stem, stages / blocks up to it."""
        if self.frozen_stages < 0:
            return []
        infos = self.network.feature_info
        infos = infos.info if hasattr(infos, "info") else infos  # a FeatureInfo object or the model's dict list
        stop = infos[self.frozen_stages + 1]["module"] if self.frozen_stages + 1 < len(infos) else None
        out = []
        for name, child in self.network.named_children():
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
            for p in self.network.parameters(recurse=False):
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
        if self.pooled:
            return (self.model(x),)
        features = self.model(x)
        if self.out_norms is not None:
            features = [norm(f) for norm, f in zip(self.out_norms, features)]
        return tuple(features)
