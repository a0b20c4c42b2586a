"""ELSA: Hadamard attention + ghost head (spec `elsa.md` §1.5, §2), on channels-last tensors.

Parameter names and shapes are the official checkpoint keys (`pre_proj`, `attn.0`, `attn.2`,
`ghost_head`, `post_proj`). The attention itself is `localattn.ops.elsa_attention` (`localattn.ops.elsa`
with attention dropout), looked up at call time so that tests can swap in the reference implementation.
"""
import logging
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_

from localattn import ops

logger = logging.getLogger(__name__)


def round_up(value, multiple):
    """Smallest multiple of `multiple` that is >= `value`."""
    return int(math.ceil(value / multiple)) * multiple


def ghost_head_shape(lam, gamma, dim_v, kernel_size):
    """Shape of the `ghost_head` parameter for a lam/gamma case (spec §1.5); None when both are 0."""
    kernel = (dim_v, kernel_size, kernel_size)
    if lam != 0 and gamma != 0:
        return (2, 1) + kernel
    if lam != 0 or gamma != 0:
        return (1,) + kernel
    return None


class ELSA(nn.Module):
    """Enhanced local self-attention on `(B, H, W, dim)` tensors -> `(B, H//stride, W//stride, dim)`.

    q, k, v come from one 1x1 conv (`pre_proj`, split q|k|v); the Hadamard product q⊙k·scale (average
    pooled by `stride`) goes through a grouped KxK conv, GELU and a 1x1 conv into K² logits per head,
    softmaxed over the K² taps. Each head's map aggregates its `dim_v/num_heads` value channels,
    modulated per channel by the ghost head: filter = ghost_mul**lam · attn + ghost_add·gamma.
    Softmax, ghost filter and aggregation run as one op, `ops.elsa_attention`, on the channels-last
    logits and values (the unfused published graph only for attention dropout in training); a forward
    hook on `self.attn` sees the logits, `logits.view(B, heads, K², H//s, W//s).softmax(2)` is the map.
    `dim_qk` defaults to `(dim//3)*2` and is rounded up to a multiple of `group_width` (channels per
    group of `attn.0`).
    """

    def __init__(self, dim, num_heads, dim_qk=None, dim_v=None, kernel_size=5, stride=1, dilation=1,
                 qkv_bias=False, qk_scale=None, attn_drop=0., proj_drop=0., group_width=8, groups=1,
                 lam=1, gamma=1):
        super().__init__()
        if kernel_size % 2 != 1 or kernel_size < 1:
            raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size}")
        if stride < 1 or dilation < 1:
            raise ValueError(f"stride and dilation must be >= 1, got stride={stride}, dilation={dilation}")
        dim_v = dim_v or dim
        dim_qk = round_up(dim_qk or (dim // 3) * 2, group_width)
        if dim_v % num_heads:
            raise ValueError(f"dim_v={dim_v} must be divisible by num_heads={num_heads}")
        if dim_qk % groups or (kernel_size ** 2 * num_heads) % groups:
            raise ValueError(f"groups={groups} must divide dim_qk={dim_qk} and kernel_size²·num_heads="
                             f"{kernel_size ** 2 * num_heads}")
        self.dim_qk, self.dim_v, self.num_heads = dim_qk, dim_v, num_heads
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.lam, self.gamma = lam, gamma
        self.scale = qk_scale or (dim_v // num_heads) ** -0.5
        logger.debug("ELSA lambda = %s, gamma = %s, scale = %s", lam, gamma, self.scale)

        padding = (kernel_size - 1) // 2 * dilation
        self.pre_proj = nn.Conv2d(dim, 2 * dim_qk + dim_v, 1, bias=qkv_bias)
        self.attn = nn.Sequential(
            nn.Conv2d(dim_qk, dim_qk, kernel_size, padding=padding, dilation=dilation,
                      groups=dim_qk // group_width),
            nn.GELU(),
            nn.Conv2d(dim_qk, kernel_size ** 2 * num_heads, 1, groups=groups),
        )
        shape = ghost_head_shape(lam, gamma, dim_v, kernel_size)
        self.ghost_head = None if shape is None else nn.Parameter(torch.empty(shape))
        self.reset_ghost_head()
        self.attn_drop = nn.Dropout(attn_drop)
        self.post_proj = nn.Linear(dim_v, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def reset_ghost_head(self):
        """Multiplicative part ~ N(0, 1), additive part ~ trunc-normal(std 0.02) (spec §2.1)."""
        if self.ghost_head is None:
            return
        with torch.no_grad():
            if self.lam != 0 and self.gamma != 0:
                self.ghost_head[0].normal_()
                trunc_normal_(self.ghost_head[1], std=.02)
            elif self.lam != 0:
                self.ghost_head.normal_()
            else:
                trunc_normal_(self.ghost_head, std=.02)

    def ghost_kernels(self) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Effective (M, D) of the op, each `(dim_v, K, K)` (shared by the batch) or None (spec §1.5)."""
        mul: Optional[torch.Tensor] = None
        add: Optional[torch.Tensor] = None
        head = self.ghost_head
        if head is not None:  # None exactly when lam == gamma == 0
            if self.lam != 0 and self.gamma != 0:
                mul, add = head[0, 0] ** self.lam, head[1, 0] * self.gamma
            elif self.lam != 0:
                mul = head[0] ** self.lam
            else:
                add = head[0] * self.gamma
        return mul, add

    def forward(self, x):
        b, h, w, c = x.shape
        s = self.stride
        q, k, v = self.pre_proj(x.permute(0, 3, 1, 2)).split([self.dim_qk, self.dim_qk, self.dim_v], dim=1)
        hadamard = q * k * self.scale
        if s > 1:
            hadamard = F.avg_pool2d(hadamard, s)  # floor(H/s), the op's output lattice
        logits = self.attn(hadamard)  # (B, heads·K², H//s, W//s); channels-last memory from the convs
        if self.training and self.attn_drop.p > 0:
            out = self.unfused(logits, v)
        else:  # softmax over the K² taps, ghost filter and aggregation in one op, channels-last in and out
            mul, add = self.ghost_kernels()
            out = ops.elsa_attention(logits.permute(0, 2, 3, 1), v.permute(0, 2, 3, 1), mul, add,
                                     self.kernel_size, self.dilation, s)
        return self.proj_drop(self.post_proj(out))

    def unfused(self, logits, v):
        """The published graph (softmax, attention dropout, `ops.elsa` on (B·heads, ·, H, W)), for
        attention dropout in training, which the fused op has no place for. Returns channels-last."""
        b, _, ho, wo = logits.shape
        heads, k2 = self.num_heads, self.kernel_size * self.kernel_size
        attn = self.attn_drop(logits.reshape(b * heads, k2, ho, wo).softmax(dim=1))
        v = v.reshape(b * heads, self.dim_v // heads, v.shape[-2], v.shape[-1])
        ghost_mul, ghost_add = self.ghost_kernels()
        # under autocast v is half precision while the softmax and the ghost head are float32: like the
        # original op, aggregate in the widest dtype present
        dtype = torch.promote_types(v.dtype, attn.dtype)
        for ghost in (ghost_mul, ghost_add):
            if ghost is not None:
                dtype = torch.promote_types(dtype, ghost.dtype)
        if ghost_mul is not None:
            ghost_mul = self.per_image_heads(ghost_mul, b).to(dtype)
        if ghost_add is not None:
            ghost_add = self.per_image_heads(ghost_add, b).to(dtype)
        v, attn = v.to(dtype), attn.to(dtype)
        out = ops.elsa(v, ghost_mul, ghost_add, attn, self.kernel_size, self.dilation, self.stride)
        return out.reshape(b, self.dim_v, ho, wo).permute(0, 2, 3, 1)

    def per_image_heads(self, kernel, batch: int):
        """A ghost kernel `(dim_v, K, K)` shared by the batch -> `(batch·heads, dim_v/heads, K, K)`."""
        return kernel.expand(batch, -1, -1, -1).reshape(batch * self.num_heads, -1, kernel.shape[-2], kernel.shape[-1])


class ELSABlock(nn.Module):
    """Pre-norm transformer block with ELSA as token mixer, on `(B, H, W, dim)` tensors.

    With `stride > 1` the output is `(B, H//s, W//s, dim)` and the shortcut takes the pixels the
    attention is centred on (`x[:, ::s, ::s]`). Defaults are the ELSABlock ones (lam=1, mlp_ratio=3,
    qk_scale=1); ELSA-Swin passes lam=0, gamma=1, mlp_ratio=4, qkv_bias=True (spec §2.2, §3.1).
    `proj_drop` of the attention is always 0, as in the original.
    """

    def __init__(self, dim, kernel_size, stride=1, num_heads=1, mlp_ratio=3., drop=0., attn_drop=0.,
                 drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm, qkv_bias=False, qk_scale=1,
                 dim_qk=None, dim_v=None, lam=1, gamma=1, dilation=1, group_width=8, groups=1):
        super().__init__()
        self.stride = stride
        self.norm1 = norm_layer(dim)
        self.attn = ELSA(dim, num_heads, dim_qk=dim_qk, dim_v=dim_v, kernel_size=kernel_size, stride=stride,
                         dilation=dilation, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                         group_width=group_width, groups=groups, lam=lam, gamma=gamma)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x):
        shortcut = x
        if self.stride > 1:
            h, w = x.shape[1] // self.stride, x.shape[2] // self.stride
            shortcut = x[:, ::self.stride, ::self.stride][:, :h, :w]
        x = shortcut + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
