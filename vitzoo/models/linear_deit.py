"""DeiT hosting Agent or InLine attention: Agent-DeiT T/S/B and InLine-DeiT T/S/B.

Papers: Agent Attention (Han et al., ECCV 2024, arXiv:2312.08874), InLine (Han et al., NeurIPS 2024,
arXiv:2412.06590); official code https://github.com/LeapLabTHU/{Agent-Attention,InLine} (MIT). Host: DeiT (Touvron
et al., ICML 2021, arXiv:2012.12877).

A plain ViT: 16x16 patch embedding, class token, learned position embedding, pre-norm blocks (LayerNorm eps 1e-6,
MLP ratio 4), final LayerNorm, class-token classifier. The new mixer attends over the class token and all patches:
Agent pools its agents from the patch queries only and gives the class token its own bias column / row; both add
their depthwise conv of the value map to the patch tokens only. Agent-DeiT-B keeps softmax attention after its first
four blocks (``mixer_depth``). InLine-DeiT's widths are not DeiT's: S is 320 wide with 10 heads at 288 px, B is 384
wide with 12 heads at 448 px. The position embedding and Agent's tables are stored for ``img_size`` and resized to
the patch grid of each input, which is zero-padded to a multiple of 16, so any input size >= 16 runs.

Feature maps (``forward_intermediates``, ``features_only``) are block outputs at stride 16, as for timm's ViTs.
"""

# No ``from __future__ import annotations``: torch.fx copies the annotations of the root ``forward`` (defined here)
# into the traced graph's code, and TorchScript cannot read them as strings.
import math
from functools import partial

import torch
import torch.nn as nn
from timm.layers import PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models import register_model
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import Block

from ..hub import convert_checkpoint
from ._contract import BackboneBase, check_image_batch, drop_path_rates
from ._factory import create_backbone
from ._linear_mixers import (
    GlobalMixerBlock,
    fit_resolution_tables,
    linear_cfg,
    linear_default_cfgs,
    make_mixer,
    mixer_no_weight_decay,
)

__all__ = ["LinearDeiT"]


def resample_pos_embed(pos_embed: torch.Tensor, size: tuple[int, int], old_size: tuple[int, int]) -> torch.Tensor:
    """The class-token-first position embedding on another patch grid: plain bicubic, as the official loaders do
    (timm's default adds antialiasing, which changes the values when shrinking)."""
    new_size, stored_size = [size[0], size[1]], [old_size[0], old_size[1]]  # timm's signature takes lists
    return resample_abs_pos_embed(pos_embed, new_size, stored_size, num_prefix_tokens=1, antialias=False)


def checkpoint_block(block: nn.Module, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One block under activation checkpointing (eager only: TorchScript never compiles it)."""
    fn = partial(block, size=size) if isinstance(block, GlobalMixerBlock) else block
    return torch.utils.checkpoint.checkpoint(fn, x, use_reentrant=False)


class LinearDeiT(BackboneBase):
    """DeiT with a global linear-cost mixer in its first ``mixer_depth`` blocks, with timm's ViT contract."""

    min_input_size = 16
    POOLS = ("token", "avg", "")

    def __init__(
        self,
        mixer: str = "agent",
        agent_num: int = 49,
        mixer_depth: int | None = None,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        self.min_input_size = patch_size
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        self.grid_size = (math.ceil(h / patch_size), math.ceil(w / patch_size))
        self.num_prefix_tokens = 1
        self.patch_embed = PatchEmbed(
            img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, output_fmt="NHWC",
            strict_img_size=False, dynamic_img_pad=True,
        )  # fmt: skip
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim))
        mixer_depth = depth if mixer_depth is None else mixer_depth
        dpr = drop_path_rates(drop_path_rate, [depth])[0]
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            GlobalMixerBlock(
                embed_dim,
                make_mixer(mixer, embed_dim, num_heads, self.grid_size, agent_num, num_prefix_tokens=1),
                mlp_ratio,
                dpr[i],
                norm_eps=1e-6,
            )  # fmt: skip
            if i < mixer_depth
            else Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[i], norm_layer=norm_layer)
            for i in range(depth)
        )
        self.norm = norm_layer(embed_dim)
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        self.build_head(embed_dim)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    # --- timm API ---------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return mixer_no_weight_decay(self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        # check_input's call, made here so that torch.fx finds the notrace check in this module's globals
        check_image_batch(x, self.in_chans, self.min_input_size, self.model_name)
        x = self.patch_embed(x)  # B, h, w, C
        b, h, w, c = x.shape
        # timm's resample returns the table itself on the grid it was stored for
        pos_embed = resample_pos_embed(self.pos_embed, (h, w), self.grid_size)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x.reshape(b, h * w, c)], dim=1)
        return x + pos_embed, (h, w)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, size = self._embed(x)
        # Only GlobalMixerBlock has context_from_input, and only it takes the map size. TorchScript unrolls the loop
        # and resolves hasattr per block, so each call is compiled for its own block type; isinstance would not do:
        # TorchScript matches module classes by compiled type name, which it mangles when a structurally different
        # GlobalMixerBlock was compiled before (e.g. another model in the same process).
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_block(block, x, size)
            elif hasattr(block, "context_from_input"):
                x = block(x, size)
            else:
                x = block(x)
        return self.norm(x)  # B, 1 + h*w, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # defined in this module because torch.fx wraps notrace functions (the input check, the position embedding
        # resample) only where they are looked up in the globals of a traced forward's module
        return self.forward_head(self.forward_features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens :].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Block outputs at ``indices`` as ``[B, C, h, w]`` maps of the patch tokens (class token dropped)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"LinearDeiT returns NCHW or NLC intermediates, got output_fmt={output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        blocks = self.blocks if not stop_early or torch.jit.is_scripting() else self.blocks[: max_index + 1]
        x, (h, w) = self._embed(x)
        intermediates = []
        for i, block in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_block(block, x, (h, w))
            elif hasattr(block, "context_from_input"):  # a GlobalMixerBlock: see forward_features
                x = block(x, (h, w))
            else:
                x = block(x)
            if i in take_indices:
                out = (self.norm(x) if norm else x)[:, self.num_prefix_tokens :]
                if output_fmt == "NCHW":
                    out = out.transpose(1, 2).reshape(x.shape[0], -1, h, w)  # B, C, h, w
                intermediates.append(out)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def _fit_tables(state_dict: dict[str, torch.Tensor], model: LinearDeiT) -> dict[str, torch.Tensor]:
    """The position embedding (square grid, class token first) and mixer tables resized to ``model``'s size."""
    pos_embed = state_dict.get("pos_embed")
    if pos_embed is not None and pos_embed.shape != model.pos_embed.shape:
        side = math.isqrt(pos_embed.shape[1] - 1)
        if side * side == pos_embed.shape[1] - 1:
            state_dict = dict(state_dict)
            state_dict["pos_embed"] = resample_pos_embed(pos_embed, model.grid_size, (side, side))
    return fit_resolution_tables(state_dict, model)


def checkpoint_filter_fn(state_dict: dict, model: LinearDeiT) -> dict[str, torch.Tensor]:
    """Load an official (timm ViT keys, weights under ``'model'``) or vitzoo checkpoint; the layouts coincide.

    The position embedding and Agent's tables are resized when the checkpoint was trained at another resolution
    than the model's ``img_size``. A mismatch raises :class:`vitzoo.hub.CheckpointError`.
    """
    return convert_checkpoint(state_dict, model, adapt=lambda sd: _fit_tables(sd, model))


def _create(variant: str, pretrained: bool = False, **kwargs) -> LinearDeiT:
    depth = kwargs.get("depth", 12)
    kwargs.setdefault("out_indices", tuple(range(depth - 4, depth)))  # the last four blocks, as timm's ViTs
    return create_backbone(LinearDeiT, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(mixer: str, size: int = 224, **kwargs) -> dict:
    return linear_cfg(
        mixer, "patch_embed.proj", input_size=(3, size, size), pool_size=None, **kwargs
    )  # fmt: skip


default_cfgs = linear_default_cfgs(
    {
        "vitzoo_agent_deit_t": _cfg("agent"),
        "vitzoo_agent_deit_s": _cfg("agent"),
        "vitzoo_agent_deit_b": _cfg("agent"),
        "vitzoo_inline_deit_t": _cfg("inline"),
        "vitzoo_inline_deit_s": _cfg("inline", 288),
        "vitzoo_inline_deit_b": _cfg("inline", 448),
    }
)


@register_model
def vitzoo_agent_deit_t(pretrained: bool = False, **kwargs) -> LinearDeiT:
    model_args = dict(mixer="agent", embed_dim=192, num_heads=3)
    return _create("vitzoo_agent_deit_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_agent_deit_s(pretrained: bool = False, **kwargs) -> LinearDeiT:
    model_args = dict(mixer="agent", embed_dim=384, num_heads=6)
    return _create("vitzoo_agent_deit_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_agent_deit_b(pretrained: bool = False, **kwargs) -> LinearDeiT:
    model_args = dict(mixer="agent", embed_dim=768, num_heads=12, agent_num=81, mixer_depth=4)
    return _create("vitzoo_agent_deit_b", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_deit_t(pretrained: bool = False, **kwargs) -> LinearDeiT:
    model_args = dict(mixer="inline", embed_dim=192, num_heads=6)
    return _create("vitzoo_inline_deit_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_deit_s(pretrained: bool = False, **kwargs) -> LinearDeiT:
    model_args = dict(mixer="inline", embed_dim=320, num_heads=10, img_size=288)
    return _create("vitzoo_inline_deit_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_deit_b(pretrained: bool = False, **kwargs) -> LinearDeiT:
    model_args = dict(mixer="inline", embed_dim=384, num_heads=12, img_size=448)
    return _create("vitzoo_inline_deit_b", pretrained, **dict(model_args, **kwargs))
