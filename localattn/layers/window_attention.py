"""ELSA-Swin's stage-4 Swin block: window attention in the official ELSA key layout (spec §3.2).

Differences from vanilla Swin, kept for checkpoint compatibility: `pre_proj` (= Swin `qkv`) splits into
**v, q, k**; `post_proj` = Swin `proj`; the bias table `rb` is `(heads, (2W-1)²)`; the persistent int64
buffer `relative_id` indexes it with the sign-flipped relative position (key − query).
Blocks run on channels-last `(B, H, W, C)` maps of any size (padding like mmdet's Swin).
"""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_

from .patch import padded_size

def relative_position_ids(window: List[int], table_window: int):
    """`(wh·ww)²` indices into a `(2T−1)²` table for every (query, key) pair of a `window=(wh, ww)`.

    Relative coordinate = key − query (the sign flip of ELSA-Swin), offset by T−1 per axis, row-major.
    """
    wh, ww = window[0], window[1]
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = coords[:, None, :] - coords[:, :, None]  # [axis, query, key] = key − query
    side = 2 * table_window - 1
    return ((rel[0] + table_window - 1) * side + rel[1] + table_window - 1).flatten()


def window_partition(x, window: int):
    """(B, H, W, C) with H, W multiples of `window` -> (B·nW, window², C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c)


def window_reverse(windows, window: int, h: int, w: int):
    """Inverse of `window_partition`: (B·nW, window², C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(height: int, width: int, window: int, shift: int, device: Optional[torch.device] = None,
                        mask_value: float = -100.0):
    """Swin's (nW, window², window²) additive mask (0 / `mask_value`, Swin's −100 between tokens of different
    shifted sub-windows) for a padded map cyclically shifted by `shift`."""
    labels = torch.zeros(1, height, width, 1, device=device)
    starts, ends = [0, height - window, height - shift], [height - window, height - shift, height]
    col_starts, col_ends = [0, width - window, width - shift], [width - window, width - shift, width]
    for i in range(3):  # bands [0, -window), [-window, -shift), [-shift, end) of rows and columns
        for j in range(3):
            labels[:, starts[i]:ends[i], col_starts[j]:col_ends[j], :] = i * 3 + j
    ids = window_partition(labels, window).squeeze(-1)
    return (ids[:, None, :] != ids[:, :, None]).float() * mask_value


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with relative position bias `rb[:, relative_id]`.

    Input `(B·nW, N, C)`; `window=(h, w)` with `h, w <= window_size` selects a smaller single window
    (its bias entries are taken from the same table); `mask` is `(nW, N, N)` or None.
    """

    def __init__(self, dim, num_heads, window_size=7, qkv_bias=True, qk_scale=None, attn_drop=0., proj_drop=0.):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.window_size = num_heads, window_size
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.pre_proj = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.rb = nn.Parameter(torch.empty(num_heads, (2 * window_size - 1) ** 2))
        trunc_normal_(self.rb, std=.02)
        self.register_buffer("relative_id", relative_position_ids((window_size, window_size), window_size))
        self.attn_norm = nn.Softmax(dim=-1)
        self.attn_drop = nn.Dropout(attn_drop)
        self.post_proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self, window: Optional[List[int]] = None):
        """(1, heads, N, N) bias for the full window or for a smaller `window=(h, w)`.

        A sub-window's (query, key) pairs index the full window's `relative_id` (the index only depends on
        key − query) by gathering, without branching on the size or slicing views: traced / exported
        models keep h, w dynamic.
        """
        ws = self.window_size
        h, w = ws, ws
        if window is not None:
            h, w = window[0], window[1]
        pos = (torch.arange(h, device=self.rb.device)[:, None] * ws + torch.arange(w, device=self.rb.device)).flatten()
        ids = self.relative_id.view(ws * ws, ws * ws)[pos[:, None], pos[None, :]].flatten()
        return self.rb[:, ids].reshape(1, self.num_heads, h * w, h * w)

    def forward(self, x, mask: Optional[torch.Tensor] = None, window: Optional[List[int]] = None):
        b_, n, c = x.shape
        v, q, k = self.pre_proj(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.position_bias(window)
        if mask is not None:  # (B, nW, heads, N, N): bias + mask of the window
            num_windows = mask.shape[0]
            bias = bias.unsqueeze(0) + mask.view(1, num_windows, 1, n, n)
            q = q.reshape(-1, num_windows, self.num_heads, n, q.shape[-1])
            k = k.reshape(-1, num_windows, self.num_heads, n, k.shape[-1])
            v = v.reshape(-1, num_windows, self.num_heads, n, v.shape[-1])
        attn = self.attn_norm((q @ k.transpose(-2, -1)) * self.scale + bias)
        out = (self.attn_drop(attn) @ v).reshape(b_, self.num_heads, n, -1)
        out = out.transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.post_proj(out))


class WindowBlock(nn.Module):
    """Swin block (norm1 → window attention → residual, norm2 → MLP → residual) on `(B, H, W, C)`.

    The map is padded right/bottom to a multiple of the window (padded tokens take part as keys, as in
    mmdet's Swin); `shift_size > 0` rolls it and adds the shifted-window mask. With
    `fit_single_window=True` (classification, spec §3.2 resolution clamp) a map no larger than one window
    is attended as a single unpadded, unshifted window — at 224² this is the original global 7×7 attention.
    """

    def __init__(self, dim, num_heads, window_size=7, shift_size=0, mlp_ratio=4., qkv_bias=True, qk_scale=None,
                 drop=0., attn_drop=0., drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 fit_single_window=True):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size={shift_size} must be in [0, window_size={window_size})")
        self.window_size, self.shift_size, self.fit_single_window = window_size, shift_size, fit_single_window
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def windowed_attention(self, x):
        b, h, w, c = x.shape
        ws, shift = self.window_size, self.shift_size
        if self.fit_single_window and h <= ws and w <= ws:
            return self.attn(x.reshape(b, h * w, c), window=[h, w]).view(b, h, w, c)
        x = F.pad(x, (0, 0, 0, padded_size(w, ws) - w, 0, padded_size(h, ws) - h))
        hp, wp = x.shape[1], x.shape[2]
        mask: Optional[torch.Tensor] = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask(hp, wp, ws, shift, x.device).to(x.dtype)
        out = window_reverse(self.attn(window_partition(x, ws), mask), ws, hp, wp)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out[:, :h, :w]

    def forward(self, x):
        x = x + self.drop_path(self.windowed_attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
