"""What the DeiT, PVT, Swin and CSWin hosts of Agent / InLine / FLatten attention share.

The official repositories describe where the new attention goes with one string per model (``attn_type``): a
letter per stage, ``A`` / ``I`` / ``L`` for the new mixer and ``B`` / ``S`` for the host's own softmax attention,
and ``M`` for a stage whose first ``n`` blocks use the new mixer, ``n`` written after the four letters
(``AAMB2``: stages 1-2 agent attention, stage 3 two agent blocks then softmax, stage 4 softmax).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, register_notrace_function
from timm.models import generate_default_cfgs

from ..layers.global_attn import (
    AGENT_AXIS_TABLES,
    AgentAttention2d,
    FocusedLinearAttention2d,
    GlobalAttention2d,
    InLineAttention2d,
    resize_agent_table,
    resize_positional_encoding,
)
from ..ops import accumulation_dtype
from ._factory import imagenet_cfg
from ._papers import PAPERS

MIXERS = ("agent", "inline", "flatten")
NEW_LETTERS, SOFTMAX_LETTERS = "AIL", "BS"


def expand_attn_types(attn_type: str, depths: tuple[int, ...] | list[int]) -> list[list[bool]]:
    """Per stage, per block: ``True`` where the block uses the new mixer (see the module docstring)."""
    stages = len(depths)
    letters, count = attn_type[:stages], attn_type[stages:]
    valid = set(NEW_LETTERS + SOFTMAX_LETTERS + "M")
    if (
        len(letters) != stages
        or not set(letters) <= valid
        or ("M" in letters) != bool(count)
        or not (count.isdigit() or not count)
    ):
        raise ValueError(
            f"attn_type must be {stages} letters from A/I/L (new mixer), B/S (softmax) or M (first n blocks new), "
            f"followed by n when M is used, e.g. 'AAMB2'; got {attn_type!r}"
        )
    out = []
    for letter, depth in zip(letters, depths):
        if letter == "M":
            out.append([j < int(count) for j in range(depth)])
        else:
            out.append([letter in NEW_LETTERS] * depth)
    return out


def make_mixer(
    mixer: str,
    dim: int,
    num_heads: int,
    base_size: tuple[int, int],
    agent_num: int = 49,
    split_q: bool = False,
    num_prefix_tokens: int = 0,
    cswin_lepe: bool = False,
) -> GlobalAttention2d:
    """One of the global mixers; ``cswin_lepe`` adds the 3x3 depthwise conv of V that CSWin hosts add."""
    if mixer == "agent":  # Agent-CSwin's LePE is the same 3x3 depthwise conv of V that the other hosts call dwc
        return AgentAttention2d(
            dim, num_heads, agent_num, base_size, split_q=split_q, num_prefix_tokens=num_prefix_tokens
        )
    if mixer == "inline":
        return InLineAttention2d(dim, num_heads, split_q=split_q, num_prefix_tokens=num_prefix_tokens, dwc=cswin_lepe)
    if mixer == "flatten":
        if num_prefix_tokens:
            raise ValueError("FocusedLinearAttention2d has no class-token variant")
        return FocusedLinearAttention2d(dim, num_heads, base_size, split_q=split_q, lepe=cswin_lepe)
    raise ValueError(f"mixer must be one of {MIXERS}, got {mixer!r}")


@register_notrace_function  # torch.fx cannot branch on the input's rank; it records this as one call
def block_tokens(x: torch.Tensor, size: tuple[int, int] | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """A mixer block's input as ``[B, T, C]`` tokens and its map size: a ``[B, H, W, C]`` map is flattened, tokens
    need ``size``."""
    if x.dim() == 4:
        return x.flatten(1, 2), (x.shape[1], x.shape[2])
    if size is None:
        raise ValueError(
            f"a mixer block takes a [B, H, W, C] map, or [B, T, C] tokens and their map size; got a {x.dim()}-D "
            "input without a size"
        )
    return x, size


class GlobalMixerBlock(nn.Module):
    """Pre-norm transformer block around a global mixer, on a ``[B, H, W, C]`` map or ``[B, T, C]`` tokens.

    ``context_from_input``: InLine-CSwin predicts its residual kernels from the mean of the block's input (before
    the norm); the other hosts use the mixer's own input.
    """

    def __init__(
        self,
        dim: int,
        attn: GlobalAttention2d,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
        context_from_input: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.context_from_input = context_from_input

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        shape = x.shape
        x, map_size = block_tokens(x, size)  # B, T, C
        context: torch.Tensor | None = None
        if self.context_from_input:
            context = x.mean(dim=1)
        x = x + self.drop_path(self.attn(self.norm1(x), map_size, context))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.view(shape)  # the input's layout: a map again, or the same tokens


def mixer_no_weight_decay(model: nn.Module) -> set[str]:
    """What the official recipes exempt from weight decay: position tables and the class token.

    Agent's bias tables and FLatten's scale are decayed there (they are neither 1-D nor named ``*.bias``).
    """
    suffixes = ("relative_position_bias_table", "pos_embed", "cls_token")
    return {n for n, _ in model.named_parameters() if n.endswith(suffixes)}


def fit_resolution_tables(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Resize the mixers' resolution-tied tables of ``state_dict`` to ``model``'s (another ``img_size``).

    Agent's row / column bias tables lose the official leading 1 and are resized linearly along the map axis (as the
    official loader does), FLatten's key positional encoding bicubically as a square grid. Other entries pass
    unchanged; the caller checks shapes.
    """
    expected = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        target = expected.get(key)
        name = key.rsplit(".", 1)[-1]
        if target is not None and name in AGENT_AXIS_TABLES and value.dim() == target.dim() + 1:
            # the official (1, heads, ...) layout: vitzoo stores these tables without the leading 1
            if value.shape[0] == 1:
                value = value.squeeze(0)
        if target is not None and target.shape != value.shape:
            if name in AGENT_AXIS_TABLES:
                axis = AGENT_AXIS_TABLES[name]
                if value.dim() == target.dim():
                    value = resize_agent_table(value, axis, target.shape[axis])
            elif name == "positional_encoding" and value.dim() == 3:
                side = math.isqrt(value.shape[1])
                if side * side == value.shape[1]:  # the official maps are square
                    base = model.get_submodule(key.rsplit(".", 1)[0]).base_size
                    value = resize_positional_encoding(value, (side, side), base)
            elif name == "relative_position_bias_table" and value.dim() == 2:
                value = resize_relative_position_table(value, target.shape[0])
        out[key] = value
    return out


def resize_relative_position_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Swin's ``[(2w - 1)^2, heads]`` bias table for another window, resized bicubically as the official loaders do."""
    old, new = math.isqrt(table.shape[0]), math.isqrt(length)
    grid = table.t().reshape(1, table.shape[1], old, old).to(accumulation_dtype(table.dtype))
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return grid.reshape(table.shape[1], length).t().to(table.dtype)


def swin_window_size(mixer: str, img_size: int | tuple[int, int]) -> int:
    """The softmax window of the official Swin hosts, derived from their ``WINDOW_SIZE`` (the stage-1 map side).

    Agent and InLine use ``max(7, WINDOW_SIZE // 8)`` (7 at 224, 9 at 288, 12 at 384); FLatten uses 7 up to a
    56-token stage 1 and 12 above.
    """
    side = max(img_size) if isinstance(img_size, tuple) else img_size
    stage1 = math.ceil(side / 4)
    if mixer == "flatten":
        return 7 if stage1 <= 56 else 12
    return max(7, stage1 // 8)


# NOTE: the official weights are Tsinghua Cloud share links (the READMEs' ImageNet-1k rows; issue #46 of
# Agent-Attention reports some dead). They carry no file name, which timm's download cache needs, so no cfg has a
# url: download one and load it with pretrained_cfg_overlay=dict(file=...). Share id per model:
_TSINGHUA_IDS = {
    "vitzoo_agent_deit_t": "57e0904221824ee7b7af",
    "vitzoo_agent_deit_s": "fdd43304372541db8ea7",
    "vitzoo_agent_deit_b": "5115f15fdd7e4ab58fbc",
    "vitzoo_agent_pvt_t": "13fdf0e0a7c5498c934f",
    "vitzoo_agent_pvt_s": "36b8be9a8863456685a3",
    "vitzoo_agent_pvt_m": "4d00ecacf18b45f9b88c",
    "vitzoo_agent_pvt_l": "040cfe0cfbbe4762ad09",
    "vitzoo_agent_swin_t": "a2ddc1190c224f768a41",
    "vitzoo_agent_swin_s": "f607172c9fea4d6e99bb",
    "vitzoo_agent_swin_b": "4fcd2d0114bb490483c3",
    "vitzoo_agent_cswin_t": "8c562a74441e46d5902b",
    "vitzoo_agent_cswin_s": "30eb8af675bc4b7a8747",
    "vitzoo_agent_cswin_b": "c8035b0839b2410c8c9f",
    "vitzoo_inline_deit_t": "1d6b8191ad6d4114b291",
    "vitzoo_inline_deit_s": "2f3898b07e9247f3beb3",
    "vitzoo_inline_deit_b": "10bdd726d4b0435eb34e",
    "vitzoo_inline_pvt_t": "90ac52b1555b401eb5e6",
    "vitzoo_inline_pvt_s": "1ab953b2479d433080a3",
    "vitzoo_inline_pvt_m": "a72aec31e6084bc0a280",
    "vitzoo_inline_pvt_l": "efd91318ba964f01b288",
    "vitzoo_inline_swin_t": "32810869fcc34410966b",
    "vitzoo_inline_swin_s": "e9657fd247c04c7cb1a1",
    "vitzoo_inline_swin_b": "bf23564bb64c420aafe1",
    "vitzoo_inline_cswin_t": "49fa2ecc543647c4b970",
    "vitzoo_inline_cswin_s": "59f4e65f776f4052b93c",
    "vitzoo_inline_cswin_b": "91e17121df284ae38521",
    "vitzoo_flatten_pvt_t": "3ab1d773f19d45648690",
    "vitzoo_flatten_swin_t": "e1518e76703e4e57a7f2",
    "vitzoo_flatten_swin_s": "94188e52af354bf4a88b",
    "vitzoo_flatten_swin_b": "7a9e5186bad04e7fb3a9",
    "vitzoo_flatten_cswin_t": "48ba765ba8b0451d9d5a",
}
OFFICIAL_WEIGHT_LINKS = {name: f"https://cloud.tsinghua.edu.cn/f/{i}/?dl=1" for name, i in _TSINGHUA_IDS.items()}


def linear_cfg(mixer: str, first_conv: str, **kwargs) -> dict:
    """Pretrained cfg of an Agent / InLine / FLatten model.

    The official evaluation (Swin's training code in all three repositories) resizes to 256/224 of the input size
    and centre-crops: crop 0.875, bicubic, ImageNet mean and std, which is :func:`imagenet_cfg`'s default.
    """
    return imagenet_cfg(first_conv=first_conv, **PAPERS[mixer].cfg_fields(), **kwargs)


def linear_default_cfgs(cfgs: dict[str, dict]) -> dict:
    """timm's ``default_cfgs`` for a host's models, each noting where its official weights are published."""
    for name, cfg in cfgs.items():
        if name in OFFICIAL_WEIGHT_LINKS:
            cfg["notes"] = (
                f"official ImageNet-1k weights: {OFFICIAL_WEIGHT_LINKS[name]} (download, then "
                "pretrained=True with pretrained_cfg_overlay=dict(file=path))",
            )
    return generate_default_cfgs(cfgs)
