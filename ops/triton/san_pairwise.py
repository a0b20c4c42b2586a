"""Triton kernel of the fused SAN pairwise attention `localattn::san_pairwise` (forward; reference and
full statement: `ops/reference.py` `san_pairwise`; its backward `ops/_san_fused.py` recomputes the
weight branch with the unfused ops, which have Triton kernels too).

    u[c,t,l] = relu(scale0[c]·([x1; position](centre l) − [x2; position](neighbour t of l))[c] + shift0[c])
    z[j,t,l] = Σ_m weight5[j,m]·relu(Σ_c weight2[m,c]·u[c,t,l] + shift2[m]) + bias5[j]
    out[n,c,l] = Σ_t softmax_t(z)[c mod C_w, t, l] · value~[n, c, neighbour t of l]      (reflect, stride 1)

Strip tiling of `common.py`: a program owns output rows of one sample and, per block of pixels, holds
the (R+2, K², pixels) relation tile, builds the (C_w, K², pixels) logits in registers one hidden unit at a
time, softmaxes them over the taps and aggregates the value channels C_w at a time. Nothing K²-sized
is written to memory. Parameters in any float dtype (used in fp32, fp64 for fp64 values).
"""
import torch
import triton
import triton.language as tl

from .common import (Access, Geometry, accumulator, common_dtype, one_row, prepare, strip_launch, strip_ranges,
                     tiling, window)

TILE_ELEMENTS = 8192  # elements of one (channels, TAPS, BLOCK_P) register tile


@triton.jit
def _forward_kernel(x1_ptr, x2_ptr, pos_ptr, v_ptr, s0_ptr, sh0_ptr, w2_ptr, sh2_ptr, w5_ptr, b5_ptr, out_ptr,
                    R, M, Cw, C, H, W, Ho, Wo, stride, padding, dilation, rows, strips,
                    K: tl.constexpr, TAPS: tl.constexpr, BLOCK_P: tl.constexpr, FEATURES: tl.constexpr,
                    GROUP: tl.constexpr, ACC: tl.constexpr):
    n, o0, o1, _, _ = strip_ranges(H, W, Ho, Wo, stride, rows, strips)
    HW = H * W
    taps = tl.arange(0, TAPS)
    tmask = taps < K * K
    f = tl.arange(0, FEATURES)
    fmask = f < R + 2
    from_x = f < R
    from_pos = (f >= R) & fmask
    j = tl.arange(0, GROUP)
    jmask = j < Cw
    scale0 = tl.load(s0_ptr + f, mask=fmask, other=0.0).to(ACC)[:, None, None]
    shift0 = tl.load(sh0_ptr + f, mask=fmask, other=0.0).to(ACC)[:, None, None]
    bias5 = tl.load(b5_ptr + j, mask=jmask, other=0.0).to(ACC)[:, None, None]
    x_rows = (n.to(tl.int64) * R + f) * HW
    pos_rows = (f - R) * HW
    for p0 in range(o0, o1, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < o1
        offsets, nmask = window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K, True)
        cmask = pmask[None, :]
        centre = (tl.load(x1_ptr + x_rows[:, None] + p[None, :], mask=from_x[:, None] & cmask, other=0.0).to(ACC)
                  + tl.load(pos_ptr + pos_rows[:, None] + p[None, :], mask=from_pos[:, None] & cmask,
                            other=0.0).to(ACC))
        neighbour = (
            tl.load(x2_ptr + x_rows[:, None, None] + offsets[None], mask=from_x[:, None, None] & nmask[None],
                    other=0.0).to(ACC)
            + tl.load(pos_ptr + pos_rows[:, None, None] + offsets[None], mask=from_pos[:, None, None] & nmask[None],
                      other=0.0).to(ACC))
        u = tl.maximum(scale0 * (centre[:, None, :] - neighbour) + shift0, 0.0)
        z = tl.zeros((GROUP, TAPS, BLOCK_P), dtype=ACC) + bias5
        for m in range(M):
            w2 = tl.load(w2_ptr + m * (R + 2) + f, mask=fmask, other=0.0).to(ACC)
            hidden = tl.maximum(tl.sum(w2[:, None, None] * u, axis=0) + tl.load(sh2_ptr + m).to(ACC), 0.0)
            w5 = tl.load(w5_ptr + j * M + m, mask=jmask, other=0.0).to(ACC)
            z += w5[:, None, None] * hidden[None]
        z = tl.where(tmask[None, :, None], z, float("-inf"))
        e = tl.exp(z - tl.max(z, axis=1)[:, None, :])
        attn = e / tl.sum(e, axis=1)[:, None, :]
        for c0 in range(0, C, Cw):
            planes = (n.to(tl.int64) * C + c0 + j) * HW
            v = tl.load(v_ptr + planes[:, None, None] + offsets[None], mask=jmask[:, None, None] & nmask[None],
                        other=0.0).to(ACC)
            tl.store(out_ptr + planes[:, None] + p[None, :], tl.sum(attn * v, axis=1).to(out_ptr.dtype.element_ty),
                     mask=jmask[:, None] & cmask)


def _tiling(x1, weight5, kernel_size, dilation):
    """(tiling, BLOCK_P, FEATURES, GROUP) of one call."""
    n, rel, h, w = x1.shape
    padding = dilation * (kernel_size - 1) // 2
    t = tiling(n, Geometry(h, w, h, w, kernel_size, 1, padding, dilation, True))
    features = triton.next_power_of_2(rel + 2)
    group = triton.next_power_of_2(max(weight5.shape[0], 1))
    block_p = max(1, min(TILE_ELEMENTS // (t.taps * max(features, group)), t.block_p))
    return t, block_p, features, group


def forward_launches(x1, x2, position, value, scale0, shift0, weight2, shift2, weight5, bias5, kernel_size,
                     dilation):
    """The launches of `san_pairwise` (shapes and dtypes only: meta tensors will do)."""
    t, *_ = _tiling(x1, weight5, kernel_size, dilation)
    g, rel, c, e = t.geometry, x1.shape[1], value.shape[1], value.element_size()
    neighbours = lambda s: g.neighbour_rows(t.out_rows(s))  # noqa: E731
    params = [Access(name, "r", 1, p.numel(), one_row, p.element_size()) for name, p in (
        ("scale0", scale0), ("shift0", shift0), ("weight2", weight2), ("shift2", shift2), ("weight5", weight5),
        ("bias5", bias5))]
    return [strip_launch("san_pairwise", t, [
        Access("x1", "r", rel, g.width, t.out_rows, e),
        Access("x2", "r", rel, g.width, neighbours, e),
        Access("position", "r", 2, g.width, neighbours, position.element_size()),
        Access("value", "r", c, g.width, neighbours, e),
        *params,
        Access("out", "w", c, g.width, t.out_rows, e)])]


def san_pairwise(x1, x2, position, value, scale0, shift0, weight2, shift2, weight5, bias5, kernel_size, dilation):
    """Fused SAN pairwise attention forward: -> (N, C, H, W) in the dtype of `value`."""
    tensors = prepare(x1, x2, position, value, scale0, shift0, weight2, shift2, weight5, bias5)
    x1, x2, position, value, scale0, shift0, weight2, shift2, weight5, bias5 = tensors
    common_dtype("san_pairwise", x1, x2, value)
    out = torch.empty_like(value)
    if out.numel() == 0:
        return out
    t, block_p, features, group = _tiling(x1, weight5, kernel_size, dilation)
    with torch.cuda.device_of(value):
        _forward_kernel[t.grid](*tensors, out, x1.shape[1], weight2.shape[0], weight5.shape[0], value.shape[1],
                                *t.runtime(), K=kernel_size, TAPS=t.taps, BLOCK_P=block_p, FEATURES=features,
                                GROUP=group, ACC=accumulator(value.dtype))
    return out
