"""Swin-style patch embedding and patch merging on channels-last maps, for any input size.

Odd sizes are zero-padded right/bottom like mmdet's Swin, so outputs are `ceil(H/p)` and `ceil(H/2)`;
at sizes that divide evenly the result equals the fixed-size originals.
"""
import torch.nn as nn
import torch.nn.functional as F


def padded_size(size: int, multiple: int) -> int:
    """`size` rounded up to a multiple: `ceil(size / multiple) * multiple`. Written as a floor division (no
    modulo), which symbolic shapes (torch.export with dynamic H/W) simplify quickly."""
    return (size + multiple - 1) // multiple * multiple


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
        p, h, w = self.patch_size, x.shape[2], x.shape[3]
        x = F.pad(x, (0, padded_size(w, p) - w, 0, padded_size(h, p) - h))
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
        b, h, w, c = x.shape
        h2, w2 = padded_size(h, 2) // 2, padded_size(w, 2) // 2
        x = F.pad(x, (0, 0, 0, 2 * w2 - w, 0, 2 * h2 - h))
        # (B, H/2, row parity, W/2, col parity, C) -> neighbours ordered (col parity, row parity): Swin's order
        x = x.view(b, h2, 2, w2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h2, w2, 4 * c)
        return self.reduction(self.norm(x))
