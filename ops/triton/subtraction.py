"""Triton kernels of SAN subtraction2 (spec san.md §1.3), zero or reflect padding.

D[n,c,k,l] = X1[n,c,centre of l] − X~2[n,c,neighbour k of l], output (N,C,K²,H_o·W_o); the centre
of output pixel (h,w) is input pixel (h·s, w·s), which requires 2p = d(K−1). `subtraction` is
subtraction2(x, x) and needs no kernel of its own. Gather-form backward (no atomics).
"""
import torch
import triton
import triton.language as tl

from ..reference import output_size
from .common import accumulator, mirrors, neighbour, reader, tile, tile_grid


@triton.jit
def _forward_kernel(x1_ptr, x2_ptr, out_ptr, C, H, W, Ho, Wo, stride, padding, dilation,
                    K: tl.constexpr, REFLECT: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    L = Ho * Wo
    n, c, p = tile(L, BLOCK_C, BLOCK_P)
    mask = (c < C)[:, None] & (p < L)[None, :]
    planes = (n * C + c)[:, None]
    oy = p // Wo
    ox = p % Wo
    centre = tl.load(x1_ptr + planes * H * W + (oy * stride * W + ox * stride)[None, :], mask=mask,
                     other=0.0).to(ACC)
    for ky in range(K):
        iy, vy = neighbour(oy, ky, stride, padding, dilation, H, REFLECT)
        for kx in range(K):
            ix, vx = neighbour(ox, kx, stride, padding, dilation, W, REFLECT)
            x2 = tl.load(x2_ptr + planes * H * W + (iy * W + ix)[None, :], mask=mask & (vy & vx)[None, :],
                         other=0.0).to(ACC)
            rows = planes * K * K + ky * K + kx
            tl.store(out_ptr + rows * L + p[None, :], (centre - x2).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(g_ptr, g1_ptr, g2_ptr, C, H, W, Ho, Wo, stride, padding, dilation,
                     K: tl.constexpr, MIRRORS: tl.constexpr, ACC: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad X1[n,c,y,x] = Σ_k G[n,c,k,(y,x)/s] on the stride lattice (else 0);
    grad X2[n,c,y,x] = −Σ G[n,c,k,l] over every (k,l) whose neighbour reads (y,x)."""
    L = Ho * Wo
    n, c, p = tile(H * W, BLOCK_C, BLOCK_P)
    cmask = c < C
    pmask = p < H * W
    y = p // W
    x = p % W
    rows = (n * C + c)[:, None] * K * K
    centre = pmask & (y % stride == 0) & (x % stride == 0) & (y // stride < Ho) & (x // stride < Wo)
    centre_mask = cmask[:, None] & centre[None, :]
    acc1 = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    acc2 = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    centre_pixel = (y // stride * Wo + x // stride)[None, :]
    for k in range(K * K):
        acc1 += tl.load(g_ptr + (rows + k) * L + centre_pixel, mask=centre_mask, other=0.0).to(ACC)
    for my in tl.static_range(MIRRORS):
        for mx in tl.static_range(MIRRORS):
            for ky in range(K):
                oy, vy = reader(y, ky, stride, padding, dilation, H, Ho, my)
                for kx in range(K):
                    ox, vx = reader(x, kx, stride, padding, dilation, W, Wo, mx)
                    o = (oy * Wo + ox)[None, :]
                    mask = cmask[:, None] & (pmask & vy & vx)[None, :]
                    acc2 -= tl.load(g_ptr + (rows + ky * K + kx) * L + o, mask=mask, other=0.0).to(ACC)
    planes = (n * C + c)[:, None] * H * W + p[None, :]
    mask = cmask[:, None] & pmask[None, :]
    tl.store(g1_ptr + planes, acc1.to(g1_ptr.dtype.element_ty), mask=mask)
    tl.store(g2_ptr + planes, acc2.to(g2_ptr.dtype.element_ty), mask=mask)


def subtraction2(input1, input2, kernel_size, stride, padding, dilation, reflect):
    """SAN subtraction2 forward: two (N,C,H,W) inputs -> (N,C,K²,H_o·W_o)."""
    n, c, h, w = input1.shape
    ho, wo = (output_size(size, kernel_size, stride, padding, dilation) for size in (h, w))
    out = input1.new_empty((n, c, kernel_size * kernel_size, ho * wo))
    grid, blocks = tile_grid(n, c, ho * wo)
    with torch.cuda.device_of(input1):
        _forward_kernel[grid](input1, input2, out, c, h, w, ho, wo, stride, padding, dilation, K=kernel_size,
                              REFLECT=reflect, ACC=accumulator(input1.dtype), **blocks)
    return out


def subtraction2_backward(grad_out, height, width, kernel_size, stride, padding, dilation, reflect):
    """SAN subtraction2 gradients (grad_input1, grad_input2), each (N,C,height,width)."""
    grad_out = grad_out.contiguous()
    n, c = grad_out.shape[:2]
    ho, wo = (output_size(size, kernel_size, stride, padding, dilation) for size in (height, width))
    grad1 = grad_out.new_empty((n, c, height, width))
    grad2 = torch.empty_like(grad1)
    grid, blocks = tile_grid(n, c, height * width)
    with torch.cuda.device_of(grad_out):
        _backward_kernel[grid](grad_out, grad1, grad2, c, height, width, ho, wo, stride, padding, dilation,
                               K=kernel_size, MIRRORS=mirrors(reflect),
                               ACC=accumulator(grad_out.dtype), **blocks)
    return grad1, grad2
