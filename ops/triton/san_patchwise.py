"""Triton kernel of the fused SAN patchwise attention `localattn::san_patchwise` (forward; reference and
full statement: `ops/reference.py` `san_patchwise`; its backward `ops/_san_fused.py` recomputes z with
the unfused ops, which have Triton kernels too).

    z[n,j,l] = Σ_m weight5[j,m]·hidden[n,m,l] + bias5[j]        j = w·K² + t  (w < C_w, t < K²)
    out[n,c,l] = Σ_t z[n, (c mod C_w)·K² + t, l] · value~[n, c, neighbour t of l]      (reflect, stride 1)

Strip tiling of `common.py`: a program owns output rows of one sample and, per block of pixels, builds
the (C_w, K², pixels) weights tile in registers one hidden channel at a time (rank-1 updates) and
aggregates the value channels C_w at a time; no softmax. Nothing K²-sized is written to memory.
Parameters in any float dtype (used in fp32, fp64 for fp64 values).
"""
import torch
import triton
import triton.language as tl

from .common import (Access, Geometry, accumulator, common_dtype, one_row, prepare, strip_launch, strip_ranges,
                     tiling, window)

# elements of one (C_w, TAPS, BLOCK_P) register tile; half of san_pairwise's, as each thread also holds its
# (C_w, TAPS) weight5 gather: at 8192, ptxas spills for K = 7, C_w = 8 (float32, sm_90)
TILE_ELEMENTS = 4096


@triton.jit
def _forward_kernel(hidden_ptr, v_ptr, w5_ptr, b5_ptr, out_ptr, M, Cw, C, H, W, Ho, Wo, stride, padding, dilation,
                    rows, strips, K: tl.constexpr, TAPS: tl.constexpr, BLOCK_P: tl.constexpr, GROUP: tl.constexpr,
                    ACC: tl.constexpr):
    n, o0, o1, _, _ = strip_ranges(H, W, Ho, Wo, stride, rows, strips)
    HW = H * W
    taps = tl.arange(0, TAPS)
    j = tl.arange(0, GROUP)
    jmask = j < Cw
    rows5 = j[:, None] * (K * K) + taps[None, :]  # (GROUP, TAPS) rows of weight5 / entries of bias5
    mask5 = jmask[:, None] & (taps < K * K)[None, :]
    bias5 = tl.load(b5_ptr + rows5, mask=mask5, other=0.0).to(ACC)[:, :, None]
    for p0 in range(o0, o1, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < o1
        offsets, nmask = window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K, True)
        z = tl.zeros((GROUP, TAPS, BLOCK_P), dtype=ACC) + bias5
        for m in range(M):
            hidden = tl.load(hidden_ptr + (n.to(tl.int64) * M + m) * HW + p, mask=pmask, other=0.0).to(ACC)
            w5 = tl.load(w5_ptr + rows5 * M + m, mask=mask5, other=0.0).to(ACC)
            z += w5[:, :, None] * hidden[None, None, :]
        for c0 in range(0, C, Cw):
            planes = (n.to(tl.int64) * C + c0 + j) * HW
            v = tl.load(v_ptr + planes[:, None, None] + offsets[None], mask=jmask[:, None, None] & nmask[None],
                        other=0.0).to(ACC)
            tl.store(out_ptr + planes[:, None] + p[None, :], tl.sum(z * v, axis=1).to(out_ptr.dtype.element_ty),
                     mask=jmask[:, None] & pmask[None, :])


def _tiling(hidden, weight5, kernel_size, dilation):
    """(tiling, C_w, BLOCK_P, GROUP) of one call."""
    n, _, h, w = hidden.shape
    padding = dilation * (kernel_size - 1) // 2
    t = tiling(n, Geometry(h, w, h, w, kernel_size, 1, padding, dilation, True))
    cw = weight5.shape[0] // kernel_size**2
    group = triton.next_power_of_2(max(cw, 1))
    block_p = max(1, min(TILE_ELEMENTS // (t.taps * group), t.block_p))
    return t, cw, block_p, group


def forward_launches(hidden, value, weight5, bias5, kernel_size, dilation):
    """The launches of `san_patchwise` (shapes and dtypes only: meta tensors will do)."""
    t, *_ = _tiling(hidden, weight5, kernel_size, dilation)
    g, e = t.geometry, value.element_size()
    neighbours = lambda s: g.neighbour_rows(t.out_rows(s))  # noqa: E731
    return [strip_launch("san_patchwise", t, [
        Access("hidden", "r", hidden.shape[1], g.width, t.out_rows, hidden.element_size()),
        Access("value", "r", value.shape[1], g.width, neighbours, e),
        Access("weight5", "r", 1, weight5.numel(), one_row, weight5.element_size()),
        Access("bias5", "r", 1, bias5.numel(), one_row, bias5.element_size()),
        Access("out", "w", value.shape[1], g.width, t.out_rows, e)])]


def san_patchwise(hidden, value, weight5, bias5, kernel_size, dilation):
    """Fused SAN patchwise attention forward: -> (N, C, H, W) in the dtype of `value`."""
    hidden, value, weight5, bias5 = prepare(hidden, value, weight5, bias5)
    common_dtype("san_patchwise", hidden, value)
    out = torch.empty_like(value)
    if out.numel() == 0:
        return out
    t, cw, block_p, group = _tiling(hidden, weight5, kernel_size, dilation)
    with torch.cuda.device_of(value):
        _forward_kernel[t.grid](hidden, value, weight5, bias5, out, hidden.shape[1], cw, value.shape[1],
                                *t.runtime(), K=kernel_size, TAPS=t.taps, BLOCK_P=block_p, GROUP=group,
                                ACC=accumulator(value.dtype))
    return out
