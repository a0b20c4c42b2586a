"""Triton kernels of SAN aggregation (spec san.md §1.2), zero or reflect padding.

`input` (N,C,H,W), `weight` (N,C_w,K²,H_o·W_o) with channel `c` using weight channel `c mod C_w`;
output (N,C,H_o,W_o), H_o = (H + 2p - d(K-1) - 1)//s + 1. Gather-form kernels only (no atomics),
accumulation in fp32 (fp64 for fp64 inputs), results in the input dtype.
"""
import torch
import triton
import triton.language as tl

from ..reference import output_size
from .common import accumulator, neighbour, reader, tile, tile_grid
from .reflect import neighbour_gradient


@triton.jit
def _forward_kernel(x_ptr, w_ptr, out_ptr, C, Cw, H, W, Ho, Wo, stride, padding, dilation,
                    K: tl.constexpr, REFLECT: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    L = Ho * Wo
    n, c, p = tile(L, BLOCK_C, BLOCK_P)
    cmask = c < C
    pmask = p < L
    planes = (n * C + c)[:, None]
    weight_rows = ((n * Cw + c % Cw) * K * K)[:, None]
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for ky in range(K):
        iy, vy = neighbour(p // Wo, ky, stride, padding, dilation, H, REFLECT)
        for kx in range(K):
            ix, vx = neighbour(p % Wo, kx, stride, padding, dilation, W, REFLECT)
            k = ky * K + kx
            mask = cmask[:, None] & pmask[None, :]
            w = tl.load(w_ptr + (weight_rows + k) * L + p[None, :], mask=mask, other=0.0).to(ACC)
            x = tl.load(x_ptr + planes * H * W + (iy * W + ix)[None, :], mask=mask & (vy & vx)[None, :],
                        other=0.0).to(ACC)
            acc += w * x
    tl.store(out_ptr + planes * L + p[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=cmask[:, None] & pmask[None, :])


@triton.jit
def _weight_grad_kernel(g_ptr, x_ptr, gw_ptr, C, Cw, H, W, Ho, Wo, stride, padding, dilation,
                        K: tl.constexpr, REFLECT: tl.constexpr, ACC: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad W[n,j,k,l] = Σ_g X~[n, j+g·C_w, neighbour k of l] · G[n, j+g·C_w, l].

    Tiles over (j, l) like `tile_grid`; grid axis 2 is the tap k.
    """
    L = Ho * Wo
    n, j, p = tile(L, BLOCK_C, BLOCK_P)
    k = tl.program_id(2)
    mask = (j < Cw)[:, None] & (p < L)[None, :]
    iy, vy = neighbour(p // Wo, k // K, stride, padding, dilation, H, REFLECT)
    ix, vx = neighbour(p % Wo, k % K, stride, padding, dilation, W, REFLECT)
    xmask = mask & (vy & vx)[None, :]
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for c0 in range(0, C, Cw):
        planes = (n * C + c0 + j)[:, None]
        g = tl.load(g_ptr + planes * L + p[None, :], mask=mask, other=0.0).to(ACC)
        x = tl.load(x_ptr + planes * H * W + (iy * W + ix)[None, :], mask=xmask, other=0.0).to(ACC)
        acc += g * x
    rows = ((n * Cw + j) * K * K + k)[:, None]
    tl.store(gw_ptr + rows * L + p[None, :], acc.to(gw_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _input_grad_kernel(g_ptr, w_ptr, gx_ptr, C, Cw, H, W, Ho, Wo, stride, padding, dilation,
                       K: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad X[n,c,y,x] = Σ W[n,c mod C_w,k,l]·G[n,c,l] over every (k,l) whose neighbour is (y,x), zero padding."""
    L = Ho * Wo
    n, c, p = tile(H * W, BLOCK_C, BLOCK_P)
    cmask = c < C
    pmask = p < H * W
    planes = (n * C + c)[:, None]
    weight_rows = ((n * Cw + c % Cw) * K * K)[:, None]
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for ky in range(K):
        oy, vy = reader(p // W, ky, stride, padding, dilation, Ho)
        for kx in range(K):
            ox, vx = reader(p % W, kx, stride, padding, dilation, Wo)
            o = (oy * Wo + ox)[None, :]
            mask = cmask[:, None] & (pmask & vy & vx)[None, :]
            w = tl.load(w_ptr + (weight_rows + ky * K + kx) * L + o, mask=mask, other=0.0).to(ACC)
            g = tl.load(g_ptr + planes * L + o, mask=mask, other=0.0).to(ACC)
            acc += w * g
    tl.store(gx_ptr + planes * H * W + p[None, :], acc.to(gx_ptr.dtype.element_ty),
             mask=cmask[:, None] & pmask[None, :])


def _output_hw(input, kernel_size, stride, padding, dilation):
    """(H_o, W_o) of the SAN convolution arithmetic."""
    return tuple(output_size(size, kernel_size, stride, padding, dilation) for size in input.shape[2:])


def aggregation(input, weight, kernel_size, stride, padding, dilation, reflect):
    """SAN aggregation forward: (N,C,H,W) input, (N,C_w,K²,H_o·W_o) weight -> (N,C,H_o,W_o)."""
    n, c, h, w = input.shape
    ho, wo = _output_hw(input, kernel_size, stride, padding, dilation)
    out = input.new_empty((n, c, ho, wo))
    grid, blocks = tile_grid(n, c, ho * wo)
    with torch.cuda.device_of(input):
        _forward_kernel[grid](input, weight, out, c, weight.shape[1], h, w, ho, wo, stride, padding, dilation,
                              K=kernel_size, REFLECT=reflect, ACC=accumulator(input.dtype), **blocks)
    return out


def aggregation_backward(grad_out, input, weight, kernel_size, stride, padding, dilation, reflect):
    """SAN aggregation gradients (grad_input, grad_weight), spec san.md §1.2."""
    grad_out = grad_out.contiguous()
    n, c, h, w = input.shape
    cw = weight.shape[1]
    ho, wo = _output_hw(input, kernel_size, stride, padding, dilation)
    acc = accumulator(input.dtype)

    def gather(target, height, width, pad):
        grid, blocks = tile_grid(n, c, height * width)
        _input_grad_kernel[grid](grad_out, weight, target, c, cw, height, width, ho, wo, stride, pad, dilation,
                                 K=kernel_size, ACC=acc, **blocks)

    grad_weight = torch.empty_like(weight)
    with torch.cuda.device_of(input):
        grad_input = neighbour_gradient(gather, input, padding, reflect)
        grid, blocks = tile_grid(n, cw, ho * wo)
        _weight_grad_kernel[(*grid, kernel_size * kernel_size)](
            grad_out, input, grad_weight, c, cw, h, w, ho, wo, stride, padding, dilation, K=kernel_size,
            REFLECT=reflect, ACC=acc, **blocks)
    return grad_input, grad_weight
