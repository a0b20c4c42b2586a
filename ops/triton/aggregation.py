"""Triton kernels of SAN aggregation (spec san.md §1.2), zero or reflect padding.

`input` (N,C,H,W), `weight` (N,C_w,K²,H_o·W_o) with channel `c` using weight channel `c mod C_w`;
output (N,C,H_o,W_o), H_o = (H + 2p - d(K-1) - 1)//s + 1. Strip tiling of `common.py`: a program
owns output rows of one n, loads each weight channel's (K², pixels) tile once and applies it to the
C/C_w channels sharing it. The backward is one kernel per strip: grad weight over its output pixels,
then grad input over its input pixels in gather form — reflect padding by gathering from every
padded pixel that mirrors onto the input pixel (`common.mirror`), so no scratch and no atomics.
Accumulation in fp32 (fp64 for fp64 inputs), results in the input dtype.
"""
import torch
import triton
import triton.language as tl

from ..reference import output_size
from .common import (Access, Geometry, accumulator, common_dtype, prepare, readers, strip_launch, strip_ranges,
                     tiling, window)


@triton.jit
def _forward_kernel(x_ptr, w_ptr, out_ptr, C, Cw, H, W, Ho, Wo, stride, padding, dilation, rows, strips,
                    K: tl.constexpr, TAPS: tl.constexpr, BLOCK_P: tl.constexpr, REFLECT: tl.constexpr,
                    ACC: tl.constexpr):
    n, o0, o1, _, _ = strip_ranges(H, W, Ho, Wo, stride, rows, strips)
    L = Ho * Wo
    taps = tl.arange(0, TAPS)
    tmask = taps < K * K
    group = n.to(tl.int64) * C
    for p0 in range(o0, o1, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < o1
        offsets, xmask = window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K, REFLECT)
        for j in range(Cw):
            weight_plane = (n.to(tl.int64) * Cw + j) * (K * K) * L
            w = tl.load(w_ptr + weight_plane + taps[:, None] * L + p[None, :], mask=tmask[:, None] & pmask[None, :],
                        other=0.0).to(ACC)
            for c in range(j, C, Cw):
                plane = group + c
                x = tl.load(x_ptr + plane * H * W + offsets, mask=xmask, other=0.0).to(ACC)
                tl.store(out_ptr + plane * L + p, tl.sum(w * x, axis=0).to(out_ptr.dtype.element_ty), mask=pmask)


@triton.jit
def _backward_kernel(g_ptr, x_ptr, w_ptr, gx_ptr, gw_ptr, C, Cw, H, W, Ho, Wo, stride, padding, dilation,
                     rows, strips, K: tl.constexpr, TAPS: tl.constexpr, BLOCK_P: tl.constexpr,
                     REFLECT: tl.constexpr, MIRRORS: tl.constexpr, ACC: tl.constexpr):
    """One strip: grad W[n,j,k,l] = Σ_{c ≡ j} X~[n,c,neighbour k of l]·G[n,c,l] over its output pixels l,
    then grad X[n,c,y] = Σ W[n,c mod C_w,k,l]·G[n,c,l] over the (k, l) reading y, over its input pixels."""
    n, o0, o1, i0, i1 = strip_ranges(H, W, Ho, Wo, stride, rows, strips)
    L = Ho * Wo
    taps = tl.arange(0, TAPS)
    tmask = taps < K * K
    group = n.to(tl.int64) * C
    for p0 in range(o0, o1, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < o1
        offsets, xmask = window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K, REFLECT)
        for j in range(Cw):
            acc = tl.zeros((TAPS, BLOCK_P), dtype=ACC)
            for c in range(j, C, Cw):
                plane = group + c
                g = tl.load(g_ptr + plane * L + p, mask=pmask, other=0.0).to(ACC)
                acc += g[None, :] * tl.load(x_ptr + plane * H * W + offsets, mask=xmask, other=0.0).to(ACC)
            weight_plane = (n.to(tl.int64) * Cw + j) * (K * K) * L
            tl.store(gw_ptr + weight_plane + taps[:, None] * L + p[None, :], acc.to(gw_ptr.dtype.element_ty),
                     mask=tmask[:, None] & pmask[None, :])
    for y0 in range(i0, i1, BLOCK_P):
        y = y0 + tl.arange(0, BLOCK_P)
        ymask = y < i1
        for c in range(C):
            plane = group + c
            weight_plane = (n.to(tl.int64) * Cw + c % Cw) * (K * K) * L
            acc = tl.zeros((TAPS, BLOCK_P), dtype=ACC)
            for my in tl.static_range(MIRRORS):
                for mx in tl.static_range(MIRRORS):
                    offsets, omask = readers(y, ymask, taps, W, H, Wo, Ho, stride, padding, dilation, K, my, mx)
                    w = tl.load(w_ptr + weight_plane + taps[:, None] * L + offsets, mask=omask, other=0.0).to(ACC)
                    acc += w * tl.load(g_ptr + plane * L + offsets, mask=omask, other=0.0).to(ACC)
            tl.store(gx_ptr + plane * H * W + y, tl.sum(acc, axis=0).to(gx_ptr.dtype.element_ty), mask=ymask)


def _tiling(input, kernel_size, stride, padding, dilation, reflect):
    n, _, h, w = input.shape
    ho, wo = (output_size(size, kernel_size, stride, padding, dilation) for size in (h, w))
    return tiling(n, Geometry(h, w, ho, wo, kernel_size, stride, padding, dilation, reflect))


def forward_launches(input, weight, kernel_size, stride, padding, dilation, reflect):
    """The launches of `aggregation` (shapes and dtypes only: meta tensors will do)."""
    t = _tiling(input, kernel_size, stride, padding, dilation, reflect)
    g, c, e = t.geometry, input.shape[1], input.element_size()
    return [strip_launch("aggregation", t, [
        Access("input", "r", c, g.width, lambda s: g.neighbour_rows(t.out_rows(s)), e),
        Access("weight", "r", weight.shape[1] * kernel_size**2, g.out_width, t.out_rows, e),
        Access("out", "w", c, g.out_width, t.out_rows, e)])]


def backward_launches(grad_out, input, weight, kernel_size, stride, padding, dilation, reflect):
    """The launches of `aggregation_backward` (shapes and dtypes only)."""
    t = _tiling(input, kernel_size, stride, padding, dilation, reflect)
    g, c, e = t.geometry, input.shape[1], input.element_size()
    weight_planes = weight.shape[1] * kernel_size**2
    return [strip_launch("aggregation_backward", t, [
        Access("grad_out", "r", c, g.out_width, lambda s: set(t.out_rows(s)) | g.reader_rows(t.in_rows(s)), e),
        Access("input", "r", c, g.width, lambda s: g.neighbour_rows(t.out_rows(s)), e),
        Access("weight", "r", weight_planes, g.out_width, lambda s: g.reader_rows(t.in_rows(s)), e),
        Access("grad_input", "w", c, g.width, t.in_rows, e),
        Access("grad_weight", "w", weight_planes, g.out_width, t.out_rows, e)])]


def aggregation(input, weight, kernel_size, stride, padding, dilation, reflect):
    """SAN aggregation forward: (N,C,H,W) input, (N,C_w,K²,H_o·W_o) weight -> (N,C,H_o,W_o)."""
    input, weight = prepare(input, weight)
    common_dtype("aggregation", input, weight)
    t = _tiling(input, kernel_size, stride, padding, dilation, reflect)
    n, c = input.shape[:2]
    out = input.new_empty((n, c, t.geometry.out_height, t.geometry.out_width))
    if out.numel() == 0:
        return out
    with torch.cuda.device_of(input):
        _forward_kernel[t.grid](input, weight, out, c, weight.shape[1], *t.runtime(), REFLECT=reflect,
                                ACC=accumulator(input.dtype), **t.meta())
    return out


def aggregation_backward(grad_out, input, weight, kernel_size, stride, padding, dilation, reflect):
    """SAN aggregation gradients (grad_input, grad_weight), spec san.md §1.2."""
    grad_out, input, weight = prepare(grad_out, input, weight)
    common_dtype("aggregation_backward", grad_out, input, weight)
    t = _tiling(input, kernel_size, stride, padding, dilation, reflect)
    grad_input, grad_weight = torch.empty_like(input), torch.empty_like(weight)
    if input.numel() == 0 or weight.numel() == 0:
        return grad_input.zero_(), grad_weight.zero_()
    with torch.cuda.device_of(input):
        _backward_kernel[t.grid](grad_out, input, weight, grad_input, grad_weight, input.shape[1], weight.shape[1],
                                 *t.runtime(), REFLECT=reflect, MIRRORS=3 if reflect else 1,
                                 ACC=accumulator(input.dtype), **t.meta())
    return grad_input, grad_weight
