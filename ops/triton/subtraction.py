"""Triton kernels of SAN subtraction2 (spec san.md §1.3), zero or reflect padding.

D[n,c,k,l] = X1[n,c,centre of l] − X~2[n,c,neighbour k of l], output (N,C,K²,H_o·W_o); the centre
of output pixel (h,w) is input pixel (h·s, w·s), which requires 2p = d(K−1). `subtraction` is
subtraction2(x, x) and needs no kernel of its own. Gather-form backward (no atomics); the reflect
fold of the second input's gradient is `reflect.neighbour_gradient`.
"""
import torch
import triton
import triton.language as tl

from ..reference import output_size
from .common import accumulator, neighbour, reader, tile, tile_grid
from .reflect import neighbour_gradient


@triton.jit
def _forward_kernel(x1_ptr, x2_ptr, out_ptr, C, H, W, Ho, Wo, stride, padding, dilation,
                    K: tl.constexpr, REFLECT: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """One tap k (grid axis 2) of a `tile_grid` tile: D[n,c,k,l] = X1[centre of l] − X~2[neighbour k of l]."""
    L = Ho * Wo
    n, c, p = tile(L, BLOCK_C, BLOCK_P)
    k = tl.program_id(2)
    mask = (c < C)[:, None] & (p < L)[None, :]
    planes = (n * C + c)[:, None]
    oy = p // Wo
    ox = p % Wo
    centre = tl.load(x1_ptr + planes * H * W + (oy * stride * W + ox * stride)[None, :], mask=mask,
                     other=0.0).to(ACC)
    iy, vy = neighbour(oy, k // K, stride, padding, dilation, H, REFLECT)
    ix, vx = neighbour(ox, k % K, stride, padding, dilation, W, REFLECT)
    x2 = tl.load(x2_ptr + planes * H * W + (iy * W + ix)[None, :], mask=mask & (vy & vx)[None, :],
                 other=0.0).to(ACC)
    tl.store(out_ptr + (planes * K * K + k) * L + p[None, :], (centre - x2).to(out_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _centre_grad_kernel(g_ptr, g1_ptr, C, H, W, Ho, Wo, stride,
                        K: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad X1[n,c,y,x] = Σ_k G[n,c,k,(y,x)/s] on the stride lattice, 0 elsewhere."""
    L = Ho * Wo
    n, c, p = tile(H * W, BLOCK_C, BLOCK_P)
    cmask = c < C
    pmask = p < H * W
    y = p // W
    x = p % W
    rows = (n * C + c)[:, None] * K * K
    centre = pmask & (y % stride == 0) & (x % stride == 0) & (y // stride < Ho) & (x // stride < Wo)
    o = (y // stride * Wo + x // stride)[None, :]
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for k in range(K * K):
        acc += tl.load(g_ptr + (rows + k) * L + o, mask=cmask[:, None] & centre[None, :], other=0.0).to(ACC)
    tl.store(g1_ptr + (n * C + c)[:, None] * H * W + p[None, :], acc.to(g1_ptr.dtype.element_ty),
             mask=cmask[:, None] & pmask[None, :])


@triton.jit
def _neighbour_grad_kernel(g_ptr, g2_ptr, C, H, W, Ho, Wo, stride, padding, dilation,
                           K: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad X2[n,c,y,x] = −Σ G[n,c,k,l] over every (k,l) whose neighbour is (y,x), zero padding."""
    L = Ho * Wo
    n, c, p = tile(H * W, BLOCK_C, BLOCK_P)
    cmask = c < C
    pmask = p < H * W
    rows = (n * C + c)[:, None] * K * K
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for ky in range(K):
        oy, vy = reader(p // W, ky, stride, padding, dilation, Ho)
        for kx in range(K):
            ox, vx = reader(p % W, kx, stride, padding, dilation, Wo)
            mask = cmask[:, None] & (pmask & vy & vx)[None, :]
            acc -= tl.load(g_ptr + (rows + ky * K + kx) * L + (oy * Wo + ox)[None, :], mask=mask,
                           other=0.0).to(ACC)
    tl.store(g2_ptr + (n * C + c)[:, None] * H * W + p[None, :], acc.to(g2_ptr.dtype.element_ty),
             mask=cmask[:, None] & pmask[None, :])


def subtraction2(input1, input2, kernel_size, stride, padding, dilation, reflect):
    """SAN subtraction2 forward: two (N,C,H,W) inputs -> (N,C,K²,H_o·W_o)."""
    n, c, h, w = input1.shape
    ho, wo = (output_size(size, kernel_size, stride, padding, dilation) for size in (h, w))
    out = input1.new_empty((n, c, kernel_size * kernel_size, ho * wo))
    grid, blocks = tile_grid(n, c, ho * wo)
    with torch.cuda.device_of(input1):
        _forward_kernel[(*grid, kernel_size * kernel_size)](
            input1, input2, out, c, h, w, ho, wo, stride, padding, dilation, K=kernel_size, REFLECT=reflect,
            ACC=accumulator(input1.dtype), **blocks)
    return out


def subtraction2_backward(grad_out, height, width, kernel_size, stride, padding, dilation, reflect):
    """SAN subtraction2 gradients (grad_input1, grad_input2), each (N,C,height,width)."""
    grad_out = grad_out.contiguous()
    n, c = grad_out.shape[:2]
    ho, wo = (output_size(size, kernel_size, stride, padding, dilation) for size in (height, width))
    acc = accumulator(grad_out.dtype)
    grad1 = grad_out.new_empty((n, c, height, width))

    def gather(target, rows, cols, pad):
        grid, blocks = tile_grid(n, c, rows * cols)
        _neighbour_grad_kernel[grid](grad_out, target, c, rows, cols, ho, wo, stride, pad, dilation,
                                     K=kernel_size, ACC=acc, **blocks)

    with torch.cuda.device_of(grad_out):
        grid, blocks = tile_grid(n, c, height * width)
        _centre_grad_kernel[grid](grad_out, grad1, c, height, width, ho, wo, stride, K=kernel_size, ACC=acc,
                                  **blocks)
        grad2 = neighbour_gradient(gather, grad1, padding, reflect)
    return grad1, grad2
