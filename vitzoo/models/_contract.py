"""The timm model contract shared by vitzoo's four-stage hierarchical backbones.

A subclass builds ``self.stem`` (may be Identity), ``self.stages`` (an ``nn.Sequential`` of four stages, each
with a ``grad_checkpointing`` flag), ``self.norm`` (applied to the last stage's output, may be Identity),
``self.head_drop`` and ``self.head``, and sets ``self.feature_info``; everything a timm user calls
(``forward_features``, ``forward_head``, ``forward_intermediates``, ``prune_intermediate_layers``,
``reset_classifier``, ``set_grad_checkpointing``, ``features_only``) then works the same way across families.
"""

import math

import torch
import torch.nn as nn
from timm.layers import calculate_drop_path_rates, register_notrace_function, trunc_normal_
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq


@register_notrace_function  # torch.fx cannot trace its shape conditions; it records the check as one call
def check_image_batch(x: torch.Tensor, in_chans: int, min_size: int, model_name: str) -> None:
    """Raise a ValueError that says what is valid when ``x`` is not an NCHW batch of ``in_chans``-channel images of
    at least ``min_size`` pixels a side."""
    if x.dim() != 4:
        raise ValueError(f"{model_name} expects a 4-D NCHW image batch, got a {x.dim()}-D tensor of shape {_shape(x)}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"{model_name} was built for {in_chans} input channels but got {x.shape[1]} (shape {_shape(x)}); "
            f"create it with in_chans={x.shape[1]} or convert the images"
        )
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f"{model_name} needs H and W >= {min_size} (its total stride; any size from there on runs, "
            f"multiples of 32 avoid padding), got {x.shape[2]}x{x.shape[3]}"
        )


def _shape(x: torch.Tensor) -> str:
    """``(1, 3, 224)``, as Python prints a tuple (TorchScript has no ``tuple(list)``)."""
    dims = [str(d) for d in x.shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


class DownsampleStage(nn.Module):
    """A downsampling layer, then a sequence of blocks (checkpointed when ``grad_checkpointing`` is set); NCHW out.

    ``channels_last_blocks``: the blocks run on ``[B, H, W, C]``; ``downsample_channels_last``: the downsample
    already returns that layout (otherwise it returns NCHW and is permuted for such blocks).
    """

    def __init__(
        self,
        downsample: nn.Module,
        blocks: list[nn.Module],
        channels_last_blocks: bool = False,
        downsample_channels_last: bool = False,
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.channels_last_blocks = channels_last_blocks
        self.downsample_channels_last = downsample_channels_last
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.channels_last_blocks and not self.downsample_channels_last:
            x = x.permute(0, 2, 3, 1)  # B, H, W, C
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x.permute(0, 3, 1, 2) if self.channels_last_blocks else x  # B, C, H, W


def check_pool(global_pool: str, num_classes: int, valid: tuple[str, ...]) -> str:
    """``global_pool`` when it is one of ``valid``, else a ValueError saying what is. As timm's classifier heads
    require, no pooling (``''``) goes only with no classifier (``num_classes=0``): the head classifies pooled
    features."""
    if global_pool not in valid:
        raise ValueError(f"global_pool must be one of {valid} ('' = no pooling), got {global_pool!r}")
    if global_pool == "" and num_classes > 0:
        raise ValueError(
            f"global_pool='' (no pooling) needs num_classes=0, got num_classes={num_classes}: the classifier takes "
            "pooled features; pass num_classes=0 to get the unpooled features"
        )
    return global_pool


def side_beyond(blocks: tuple[int, ...] | list[int], strides: tuple[int, ...] = (4, 8, 16, 32)) -> int:
    """The smallest multiple of 32 whose stage maps (``side // stride``) are larger than ``blocks`` at every stage.

    A model's ``dynamic_min_side`` (see :mod:`vitzoo.export`): with a window (or a group block) as large as a stage's
    map, the model computes one window over the whole map, or takes another path; one dynamic-shape program cannot
    hold both, so dynamic export starts where every stage has more than one window along each side.
    """
    side = max((block + 1) * stride for block, stride in zip(blocks, strides))
    return -(-side // 32) * 32


def stage_sizes(img_size: int | tuple[int, int], num_stages: int = 4) -> list[tuple[int, int]]:
    """Map size of each stage for ``img_size`` inputs (stride 4, then halving with padding, as the model runs)."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    h, w = math.ceil(h / 4), math.ceil(w / 4)
    sizes = []
    for _ in range(num_stages):
        sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def drop_path_rates(rate: float, depths: tuple[int, ...] | list[int]) -> list[list[float]]:
    """Stochastic-depth rate per block, rising linearly from 0 to ``rate`` over all blocks, split per stage
    (timm's schedule, ``torch.linspace`` on the CPU as the official code computes it, so meta-device builds work)."""
    return calculate_drop_path_rates(rate, list(depths), stagewise=True)


POOLS = ("avg", "")  # the hierarchical backbones' global_pool choices


class BackboneBase(nn.Module):
    """What every vitzoo model shares with timm's: classifier settings, the input check, the head and its reset.

    A subclass's ``__init__`` calls ``super().__init__(num_classes, in_chans, global_pool, drop_rate)``, builds its
    layers, sets the attributes named in ``REQUIRED`` (``feature_info``: one dict per feature map, with ``num_chs``,
    ``reduction`` and ``module``; ``norm``: the final norm) and calls :meth:`build_head`. ``POOLS`` lists the
    ``global_pool`` values its ``forward_head`` implements. :func:`~vitzoo.models._factory.create_backbone` checks
    the contract once, on every model it builds (:meth:`check_contract`).
    """

    min_input_size = 32  # below one token at the last stage the model has nothing to attend to
    POOLS: tuple[str, ...] = POOLS
    REQUIRED: tuple[str, ...] = ("feature_info", "norm", "num_features", "head", "head_drop")

    def __init__(self, num_classes: int, in_chans: int, global_pool: str, drop_rate: float):
        super().__init__()
        # instance copies: TorchScript reads module attributes, not class names or class attributes
        self.model_name = type(self).__name__
        self.min_input_size = type(self).min_input_size
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = check_pool(global_pool, num_classes, type(self).POOLS)
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

    @torch.jit.ignore
    def check_contract(self) -> None:
        """Raise a TypeError naming what a subclass's ``__init__`` left out of the contract (see the class doc)."""
        missing = [name for name in type(self).REQUIRED if not hasattr(self, name)]
        if missing:
            raise TypeError(
                f"{type(self).__name__} does not complete the {type(self).__mro__[1].__name__} contract: its "
                f"__init__ must set {missing} ({', '.join(type(self).REQUIRED)}; build_head() sets the head)"
            )
        bad = [i for i, f in enumerate(self.feature_info) if not {"num_chs", "reduction", "module"} <= set(f)]
        if bad:
            raise TypeError(f"{type(self).__name__}.feature_info entries {bad} need num_chs, reduction and module")

    # --- input checks ------------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError that says what is valid when ``x`` is not an image batch this model can process."""
        check_image_batch(x, self.in_chans, self.min_input_size, self.model_name)

    def build_head(self, num_features: int) -> None:
        """Set the classifier width and create the head dropout and linear classifier."""
        self.num_features = self.head_hidden_size = num_features
        self.head_drop = nn.Dropout(self.drop_rate)
        self.head = nn.Linear(num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """timm's transformer default: truncated-normal linear weights, zero biases (convs keep PyTorch's init)."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # --- timm API ---------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        pool = self.global_pool if global_pool is None else global_pool
        self.global_pool = check_pool(pool, num_classes, type(self).POOLS)
        self.num_classes = num_classes
        self.head = self.new_head(num_classes)

    def new_head(self, num_classes: int) -> nn.Module:
        """A fresh classifier for ``num_classes`` (Identity for 0) on the device, in the dtype and in the train / eval
        mode of the model."""
        if num_classes <= 0:
            return nn.Identity()
        like = next(self.parameters())
        head = nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
        return head.train(self.training)


class HierarchicalBackbone(BackboneBase):
    """Base class of the four-stage models: feature maps are NCHW with total stride 32 after four stages.

    Besides :class:`BackboneBase`'s attributes, ``__init__`` sets ``stem`` (image to the first stage's input) and
    ``stages`` (an ``nn.Sequential`` of stages, each with a ``grad_checkpointing`` flag), one ``feature_info`` entry
    per stage. Everything else (forward, features, intermediates, pruning, grouping) is implemented here.
    """

    REQUIRED = BackboneBase.REQUIRED + ("stem", "stages")

    @torch.jit.ignore
    def check_contract(self) -> None:
        super().check_contract()
        if len(self.feature_info) != len(self.stages):
            raise TypeError(
                f"{type(self).__name__} has {len(self.stages)} stages but {len(self.feature_info)} feature_info entries"
            )

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)", None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (NCHW) at ``indices``; ``norm`` applies the final norm to the last stage's output."""
        if output_fmt != "NCHW":
            raise ValueError(f"{self.model_name} returns NCHW intermediates only, got output_fmt={output_fmt!r}")
        self.check_input(x)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_index = len(self.stages) - 1
        stages = self.stages if not stop_early or torch.jit.is_scripting() else self.stages[: max_index + 1]
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm and i == last_index else x)
        if intermediates_only:
            return intermediates
        if len(stages) - 1 == last_index:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages (and optionally norm/head) that the requested intermediates do not need."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stem(x)
        x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
