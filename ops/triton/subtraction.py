"""Triton kernels of SAN subtraction2 (spec san.md §1.3), zero or reflect padding.

D[n,c,k,l] = X1[n,c,centre of l] − X~2[n,c,neighbour k of l], output (N,C,K²,H_o·W_o); the centre
of output pixel (h,w) is input pixel (h·s, w·s), which requires 2p = d(K−1). `subtraction` is
subtraction2(x, x) and needs no kernel of its own. Strip tiling of `common.py`; the backward is one
gather-form kernel over each strip's input pixels writing both gradients (reflect padding through
`common.mirror`), no scratch, no atomics.
"""
import torch
import triton
import triton.language as tl

from ..reference import output_size
from .common import Access, Geometry, accumulator, common_dtype, prepare, readers, strip_launch, strip_ranges, \
    tiling, window


@triton.jit
def _forward_kernel(x1_ptr, x2_ptr, out_ptr, C, H, W, Ho, Wo, stride, padding, dilation, rows, strips,
                    K: tl.constexpr, TAPS: tl.constexpr, BLOCK_P: tl.constexpr, REFLECT: tl.constexpr,
                    ACC: tl.constexpr):
    n, o0, o1, _, _ = strip_ranges(H, W, Ho, Wo, stride, rows, strips)
    L = Ho * Wo
    taps = tl.arange(0, TAPS)
    group = n.to(tl.int64) * C
    for p0 in range(o0, o1, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < o1
        offsets, xmask = window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K, REFLECT)
        centre = (p // Wo) * stride * W + (p % Wo) * stride
        out_mask = (taps < K * K)[:, None] & pmask[None, :]
        for c in range(C):
            plane = group + c
            x1 = tl.load(x1_ptr + plane * H * W + centre, mask=pmask, other=0.0).to(ACC)
            x2 = tl.load(x2_ptr + plane * H * W + offsets, mask=xmask, other=0.0).to(ACC)
            tl.store(out_ptr + plane * (K * K) * L + taps[:, None] * L + p[None, :],
                     (x1[None, :] - x2).to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _backward_kernel(g_ptr, g1_ptr, g2_ptr, C, H, W, Ho, Wo, stride, padding, dilation, rows, strips,
                     K: tl.constexpr, TAPS: tl.constexpr, BLOCK_P: tl.constexpr, MIRRORS: tl.constexpr,
                     ACC: tl.constexpr):
    """grad X1[n,c,y] = Σ_k G[n,c,k,y/s] on the stride lattice (0 elsewhere); grad X2[n,c,y] = −Σ G[n,c,k,l]
    over every (k, l) whose neighbour is y, over the strip's input pixels."""
    n, _, _, i0, i1 = strip_ranges(H, W, Ho, Wo, stride, rows, strips)
    L = Ho * Wo
    taps = tl.arange(0, TAPS)
    tmask = taps < K * K
    group = n.to(tl.int64) * C
    for y0 in range(i0, i1, BLOCK_P):
        y = y0 + tl.arange(0, BLOCK_P)
        ymask = y < i1
        row = y // W
        col = y % W
        lattice = ymask & (row % stride == 0) & (col % stride == 0) & (row // stride < Ho) & (col // stride < Wo)
        centre = taps[:, None] * L + (row // stride * Wo + col // stride)[None, :]
        for c in range(C):
            g_plane = g_ptr + (group + c) * (K * K) * L
            g1 = tl.load(g_plane + centre, mask=tmask[:, None] & lattice[None, :], other=0.0).to(ACC)
            g2 = tl.zeros((TAPS, BLOCK_P), dtype=ACC)
            for my in tl.static_range(MIRRORS):
                for mx in tl.static_range(MIRRORS):
                    offsets, omask = readers(y, ymask, taps, W, H, Wo, Ho, stride, padding, dilation, K, my, mx)
                    g2 -= tl.load(g_plane + taps[:, None] * L + offsets, mask=omask, other=0.0).to(ACC)
            plane = (group + c) * H * W
            tl.store(g1_ptr + plane + y, tl.sum(g1, axis=0).to(g1_ptr.dtype.element_ty), mask=ymask)
            tl.store(g2_ptr + plane + y, tl.sum(g2, axis=0).to(g2_ptr.dtype.element_ty), mask=ymask)


def _tiling(batch, height, width, kernel_size, stride, padding, dilation, reflect):
    ho, wo = (output_size(size, kernel_size, stride, padding, dilation) for size in (height, width))
    return tiling(batch, Geometry(height, width, ho, wo, kernel_size, stride, padding, dilation, reflect))


def forward_launches(input1, input2, kernel_size, stride, padding, dilation, reflect):
    """The launches of `subtraction2` (shapes and dtypes only: meta tensors will do)."""
    n, c, h, w = input1.shape
    t = _tiling(n, h, w, kernel_size, stride, padding, dilation, reflect)
    g, e = t.geometry, input1.element_size()
    return [strip_launch("subtraction2", t, [
        Access("input1", "r", c, w, lambda s: {o * stride for o in t.out_rows(s)}, e),
        Access("input2", "r", c, w, lambda s: g.neighbour_rows(t.out_rows(s)), e),
        Access("out", "w", c * kernel_size**2, g.out_width, t.out_rows, e)])]


def backward_launches(grad_out, height, width, kernel_size, stride, padding, dilation, reflect):
    """The launches of `subtraction2_backward` (shapes and dtypes only)."""
    n, c = grad_out.shape[:2]
    t = _tiling(n, height, width, kernel_size, stride, padding, dilation, reflect)
    g, e = t.geometry, grad_out.element_size()

    def grad_rows(strip):
        rows = t.in_rows(strip)
        return g.reader_rows(rows) | {y // stride for y in rows if y % stride == 0 and y // stride < g.out_height}

    return [strip_launch("subtraction2_backward", t, [
        Access("grad_out", "r", c * kernel_size**2, g.out_width, grad_rows, e),
        Access("grad_input1", "w", c, width, t.in_rows, e),
        Access("grad_input2", "w", c, width, t.in_rows, e)])]


def subtraction2(input1, input2, kernel_size, stride, padding, dilation, reflect):
    """SAN subtraction2 forward: two (N,C,H,W) inputs -> (N,C,K²,H_o·W_o)."""
    input1, input2 = prepare(input1, input2)
    common_dtype("subtraction2", input1, input2)
    n, c, h, w = input1.shape
    t = _tiling(n, h, w, kernel_size, stride, padding, dilation, reflect)
    out = input1.new_empty((n, c, kernel_size * kernel_size, t.geometry.out_height * t.geometry.out_width))
    if out.numel() == 0:
        return out
    with torch.cuda.device_of(input1):
        _forward_kernel[t.grid](input1, input2, out, c, *t.runtime(), REFLECT=reflect,
                                ACC=accumulator(input1.dtype), **t.meta())
    return out


def subtraction2_backward(grad_out, height, width, kernel_size, stride, padding, dilation, reflect):
    """SAN subtraction2 gradients (grad_input1, grad_input2), each (N,C,height,width)."""
    (grad_out,) = prepare(grad_out)
    n, c = grad_out.shape[:2]
    t = _tiling(n, height, width, kernel_size, stride, padding, dilation, reflect)
    grad1 = grad_out.new_empty((n, c, height, width))
    grad2 = torch.empty_like(grad1)
    if grad1.numel() == 0:
        return grad1, grad2
    with torch.cuda.device_of(grad_out):
        _backward_kernel[t.grid](grad_out, grad1, grad2, c, *t.runtime(), MIRRORS=3 if reflect else 1,
                                 ACC=accumulator(grad_out.dtype), **t.meta())
    return grad1, grad2
