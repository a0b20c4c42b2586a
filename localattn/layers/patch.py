"""Swin-style patch embedding and patch merging on channels-last maps, for any input size.

Odd sizes are zero-padded right/bottom like mmdet's Swin, so outputs are `ceil(H/p)` and `ceil(H/2)`;
at sizes that divide evenly the result equals the fixed-size originals.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchEmbed(nn.Module):
    """Image `(B, in_chans, H, W)` -> tokens `(B, ceil(H/p), ceil(W/p), embed_dim)` (conv p×p stride p, LayerNorm)."""

    def __init__(self, patch_size=4, in_chans=3, embed_dim=96, norm_layer=nn.LayerNorm):
        super().__init__()
        self.patch_size, self.in_chans = patch_size, in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"input must be (B, {self.in_chans}, H, W), got {x.shape}")
        p = self.patch_size
        x = F.pad(x, (0, (p - x.shape[3] % p) % p, 0, (p - x.shape[2] % p) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C): concat the 2×2 neighbours in Swin's order
    (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col); LayerNorm(4C);
    Linear 4C→2C without bias."""

    def __init__(self, dim, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))
