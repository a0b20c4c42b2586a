"""Input gradient of a neighbour gather, with zero or reflect padding (SAN aggregation, subtraction2).

Zero padding: one gather kernel writes the gradient of the image directly. Reflect padding: the same
kernel gathers the gradient of the *padded* image (padding 0 on the (H+2p)×(W+2p) grid) into an
fp32/fp64 scratch buffer, then `_fold_kernel` adds each mirrored border pixel back onto the image
pixel it was read from (spec san.md §1.2, "refpad fold") — a gather too, so no atomics.
"""
import torch
import triton
import triton.language as tl

from .common import accumulator, tile, tile_grid, torch_accumulator


@triton.jit
def _mirror(y, size, padding, MIRROR: tl.constexpr):
    """Padded coordinate (offset by -padding) whose reflection is `y`; (u, exists).

    0 = `y` itself, 1 = mirror below 0 (`-y`), 2 = mirror past the end (`2(size-1) - y`).
    """
    if MIRROR == 0:
        u = y
        exists = y >= 0
    elif MIRROR == 1:
        u = -y
        exists = (y > 0) & (y <= padding)
    else:
        u = 2 * (size - 1) - y
        exists = (y < size - 1) & (u <= size - 1 + padding)
    return u, exists


@triton.jit
def _fold_kernel(padded_ptr, out_ptr, planes, H, W, padding, ACC: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """out[c,y,x] = Σ padded[c, u+p, v+p] over the (up to 3×3) padded pixels that mirror onto (y,x)."""
    _, c, p = tile(H * W, BLOCK_C, BLOCK_P)
    pmask = p < H * W
    y = p // W
    x = p % W
    padded_w = W + 2 * padding
    rows = c[:, None] * (H + 2 * padding) * padded_w
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for my in tl.static_range(3):
        uy, vy = _mirror(y, H, padding, my)
        for mx in tl.static_range(3):
            ux, vx = _mirror(x, W, padding, mx)
            mask = (c < planes)[:, None] & (pmask & vy & vx)[None, :]
            offsets = ((uy + padding) * padded_w + ux + padding)[None, :]
            acc += tl.load(padded_ptr + rows + offsets, mask=mask, other=0.0).to(ACC)
    tl.store(out_ptr + c[:, None] * H * W + p[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=(c < planes)[:, None] & pmask[None, :])


def neighbour_gradient(gather, like, padding, reflect):
    """Gradient of the image `like` (N,C,H,W) read through a padded neighbour gather.

    `gather(target, height, width, padding)` must launch a gather-form kernel that writes into
    `target` (N,C,height,width) the gradient of a zero-padded image of that size.
    """
    n, c, h, w = like.shape
    if not reflect:
        grad = torch.empty_like(like)
        gather(grad, h, w, padding)
        return grad
    padded = like.new_empty((n, c, h + 2 * padding, w + 2 * padding), dtype=torch_accumulator(like.dtype))
    gather(padded, h + 2 * padding, w + 2 * padding, 0)
    grad = torch.empty_like(like)
    grid, blocks = tile_grid(1, n * c, h * w)
    _fold_kernel[grid](padded, grad, n * c, h, w, padding, ACC=accumulator(like.dtype), **blocks)
    return grad
