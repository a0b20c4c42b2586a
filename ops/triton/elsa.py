"""Triton kernels of the ELSA operator (spec elsa.md §1.2 forward, §1.6 gradients).

Tensors are NCHW (made contiguous here); `features` (N,C,H,W), `ghost_mul`/`ghost_add` (N,C,K,K) or
None, `h_attn` (N,K²,H//s,W//s). Zero borders, output pixel (i,j) centred on input pixel (i·s, j·s).
Strip tiling of `common.py`: a program owns output rows of one n, holds the (K², pixels) attention
tile and walks the C channels. The backward is one kernel per strip — grad h_attn and the ghost
partial sums over its output pixels, then grad features over its input pixels (gather form) — and a
deterministic second pass summing the ghost partials over the strips. Accumulation in fp32 (fp64 for
fp64 inputs), results in the input dtype, no atomics.
"""
import torch
import triton
import triton.language as tl

from .common import (Access, Geometry, accumulator, common_dtype, one_row, partials_launch, prepare, readers,
                     strip_launch, strip_ranges, sum_partials, tiling, torch_accumulator, window)


@triton.jit
def _filter(mul_ptr, add_ptr, attn, row, taps, tmask, HAS_MUL: tl.constexpr, HAS_ADD: tl.constexpr,
            ACC: tl.constexpr):
    """Dynamic filter M[c,k]·A + D[c,k], (TAPS, BLOCK_P), for the ghost row `row` = (n·C + c)·K²."""
    f = attn
    if HAS_MUL:
        f = tl.load(mul_ptr + row + taps, mask=tmask, other=0.0).to(ACC)[:, None] * f
    if HAS_ADD:
        f = f + tl.load(add_ptr + row + taps, mask=tmask, other=0.0).to(ACC)[:, None]
    return f


@triton.jit
def _forward_kernel(x_ptr, mul_ptr, add_ptr, attn_ptr, out_ptr, C, H, W, Ho, Wo, stride, padding, dilation,
                    rows, strips, K: tl.constexpr, TAPS: tl.constexpr, BLOCK_P: tl.constexpr,
                    HAS_MUL: tl.constexpr, HAS_ADD: tl.constexpr, ACC: tl.constexpr):
    n, o0, o1, _, _ = strip_ranges(H, W, Ho, Wo, stride, rows, strips)
    L = Ho * Wo
    taps = tl.arange(0, TAPS)
    tmask = taps < K * K
    group = n.to(tl.int64) * C
    attn_base = attn_ptr + n.to(tl.int64) * (K * K) * L
    for p0 in range(o0, o1, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < o1
        offsets, xmask = window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K, False)
        attn = tl.load(attn_base + taps[:, None] * L + p[None, :], mask=tmask[:, None] & pmask[None, :],
                       other=0.0).to(ACC)
        for c in range(C):
            plane = group + c
            f = _filter(mul_ptr, add_ptr, attn, plane * (K * K), taps, tmask, HAS_MUL, HAS_ADD, ACC)
            x = tl.load(x_ptr + plane * H * W + offsets, mask=xmask, other=0.0).to(ACC)
            tl.store(out_ptr + plane * L + p, tl.sum(f * x, axis=0).to(out_ptr.dtype.element_ty), mask=pmask)


@triton.jit
def _backward_kernel(g_ptr, x_ptr, mul_ptr, add_ptr, attn_ptr, gx_ptr, gattn_ptr, pmul_ptr, padd_ptr,
                     C, H, W, Ho, Wo, stride, padding, dilation, rows, strips,
                     K: tl.constexpr, TAPS: tl.constexpr, BLOCK_P: tl.constexpr, CHANNELS: tl.constexpr,
                     HAS_MUL: tl.constexpr, HAS_ADD: tl.constexpr, ACC: tl.constexpr):
    """One strip: grad A[n,k,o] = Σ_c g·P_k·M and the strip's partial Σ_o g·P_k·A (grad M), Σ_o g·P_k
    (grad D) for every (c, k) over its output pixels o; then grad X over its input pixels."""
    n, o0, o1, i0, i1 = strip_ranges(H, W, Ho, Wo, stride, rows, strips)
    L = Ho * Wo
    taps = tl.arange(0, TAPS)
    tmask = taps < K * K
    chans = tl.arange(0, CHANNELS)
    group = n.to(tl.int64) * C
    attn_base = attn_ptr + n.to(tl.int64) * (K * K) * L
    gattn_base = gattn_ptr + n.to(tl.int64) * (K * K) * L
    sum_mul = tl.zeros((CHANNELS, TAPS), dtype=ACC)
    sum_add = tl.zeros((CHANNELS, TAPS), dtype=ACC)
    for p0 in range(o0, o1, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < o1
        amask = tmask[:, None] & pmask[None, :]
        offsets, xmask = window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K, False)
        attn = tl.zeros((TAPS, BLOCK_P), dtype=ACC)
        if HAS_MUL:
            attn = tl.load(attn_base + taps[:, None] * L + p[None, :], mask=amask, other=0.0).to(ACC)
        grad_attn = tl.zeros((TAPS, BLOCK_P), dtype=ACC)
        for c in range(C):
            plane = group + c
            g = tl.load(g_ptr + plane * L + p, mask=pmask, other=0.0).to(ACC)
            gp = g[None, :] * tl.load(x_ptr + plane * H * W + offsets, mask=xmask, other=0.0).to(ACC)
            if HAS_MUL:
                m = tl.load(mul_ptr + plane * (K * K) + taps, mask=tmask, other=0.0).to(ACC)
                grad_attn += gp * m[:, None]
                sum_mul = tl.where(chans[:, None] == c, sum_mul + tl.sum(gp * attn, axis=1)[None, :], sum_mul)
            else:
                grad_attn += gp
            if HAS_ADD:
                sum_add = tl.where(chans[:, None] == c, sum_add + tl.sum(gp, axis=1)[None, :], sum_add)
        tl.store(gattn_base + taps[:, None] * L + p[None, :], grad_attn.to(gattn_ptr.dtype.element_ty), mask=amask)
    part = tl.program_id(0).to(tl.int64) * C * (K * K) + chans[:, None] * (K * K) + taps[None, :]
    part_mask = (chans < C)[:, None] & tmask[None, :]
    if HAS_MUL:
        tl.store(pmul_ptr + part, sum_mul, mask=part_mask)
    if HAS_ADD:
        tl.store(padd_ptr + part, sum_add, mask=part_mask)
    for y0 in range(i0, i1, BLOCK_P):
        y = y0 + tl.arange(0, BLOCK_P)
        ymask = y < i1
        offsets, omask = readers(y, ymask, taps, W, H, Wo, Ho, stride, padding, dilation, K, 0, 0)
        attn = tl.load(attn_base + taps[:, None] * L + offsets, mask=omask, other=0.0).to(ACC)
        for c in range(C):
            plane = group + c
            f = _filter(mul_ptr, add_ptr, attn, plane * (K * K), taps, tmask, HAS_MUL, HAS_ADD, ACC)
            g = tl.load(g_ptr + plane * L + offsets, mask=omask, other=0.0).to(ACC)
            tl.store(gx_ptr + plane * H * W + y, tl.sum(f * g, axis=0).to(gx_ptr.dtype.element_ty), mask=ymask)


def _tiling(features, kernel_size, dilation, stride):
    n, _, h, w = features.shape
    padding = (kernel_size - 1) // 2 * dilation
    return tiling(n, Geometry(h, w, h // stride, w // stride, kernel_size, stride, padding, dilation))


def _ghosts(ghost_mul, ghost_add, channels, taps, size, mode):
    return [Access(name, mode, 1, channels * taps, one_row, size)
            for name, ghost in (("ghost_mul", ghost_mul), ("ghost_add", ghost_add)) if ghost is not None]


def forward_launches(features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride):
    """The launches of `elsa` (shapes and dtypes only: meta tensors will do)."""
    t = _tiling(features, kernel_size, dilation, stride)
    g, c, kk, e = t.geometry, features.shape[1], kernel_size**2, features.element_size()
    return [strip_launch("elsa", t, [
        Access("features", "r", c, g.width, lambda s: g.neighbour_rows(t.out_rows(s)), e),
        Access("h_attn", "r", kk, g.out_width, t.out_rows, e),
        *_ghosts(ghost_mul, ghost_add, c, kk, e, "r"),
        Access("out", "w", c, g.out_width, t.out_rows, e)])]


def backward_launches(grad_out, features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride):
    """The launches of `elsa_backward` (shapes and dtypes only)."""
    t = _tiling(features, kernel_size, dilation, stride)
    g, c, kk, e = t.geometry, features.shape[1], kernel_size**2, features.element_size()
    gathered = lambda s: set(t.out_rows(s)) | g.reader_rows(t.in_rows(s))  # noqa: E731
    attn_rows = gathered if ghost_mul is not None else (lambda s: g.reader_rows(t.in_rows(s)))
    partial = torch_accumulator(features.dtype).itemsize
    main = strip_launch("elsa_backward", t, [
        Access("grad_out", "r", c, g.out_width, gathered, e),
        Access("features", "r", c, g.width, lambda s: g.neighbour_rows(t.out_rows(s)), e),
        Access("h_attn", "r", kk, g.out_width, attn_rows, e),
        *_ghosts(ghost_mul, ghost_add, c, kk, e, "r"),
        Access("grad_features", "w", c, g.width, t.in_rows, e),
        Access("grad_h_attn", "w", kk, g.out_width, t.out_rows, e),
        *_ghosts(ghost_mul, ghost_add, c, kk, partial, "w")])
    reductions = [partials_launch(f"elsa_backward {name} sum", t.batch, t.strips, c * kk, features.dtype)
                  for name, ghost in (("ghost_mul", ghost_mul), ("ghost_add", ghost_add)) if ghost is not None]
    return [main, *reductions]


def elsa(features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride):
    """ELSA forward: (N,C,H,W) features -> (N,C,H//s,W//s), see spec elsa.md §1.2."""
    features, ghost_mul, ghost_add, h_attn = prepare(features, ghost_mul, ghost_add, h_attn)
    common_dtype("elsa", features, ghost_mul, ghost_add, h_attn)
    n, c, h, w = features.shape
    out = features.new_empty((n, c, h // stride, w // stride))
    if out.numel() == 0:
        return out
    t = _tiling(features, kernel_size, dilation, stride)
    with torch.cuda.device_of(features):
        _forward_kernel[t.grid](
            features, _or(ghost_mul, features), _or(ghost_add, features), h_attn, out, c, *t.runtime(),
            HAS_MUL=ghost_mul is not None, HAS_ADD=ghost_add is not None, ACC=accumulator(features.dtype),
            **t.meta())
    return out


def elsa_backward(grad_out, features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride):
    """ELSA gradients (grad_features, grad_ghost_mul, grad_ghost_add, grad_h_attn), spec elsa.md §1.6.

    The gradient of an absent (None) ghost tensor is an empty tensor.
    """
    grad_out, features, ghost_mul, ghost_add, h_attn = prepare(grad_out, features, ghost_mul, ghost_add, h_attn)
    common_dtype("elsa_backward", grad_out, features, ghost_mul, ghost_add, h_attn)
    n, c, h, w = features.shape
    taps = kernel_size * kernel_size
    t = _tiling(features, kernel_size, dilation, stride)
    scratch = dict(dtype=torch_accumulator(features.dtype), device=features.device)
    partial_mul = torch.empty((n, t.strips, c, taps), **scratch) if ghost_mul is not None else None
    partial_add = torch.empty((n, t.strips, c, taps), **scratch) if ghost_add is not None else None
    if features.numel() == 0:
        ghosts = [torch.zeros_like(t) if t is not None else features.new_empty(0) for t in (ghost_mul, ghost_add)]
        return torch.zeros_like(features), *ghosts, torch.zeros_like(h_attn)
    grad_features = torch.empty_like(features)
    grad_attn = torch.empty_like(h_attn)
    with torch.cuda.device_of(features):
        _backward_kernel[t.grid](
            grad_out, features, _or(ghost_mul, features), _or(ghost_add, features), h_attn, grad_features,
            grad_attn, _or(partial_mul, features), _or(partial_add, features), c, *t.runtime(),
            CHANNELS=triton.next_power_of_2(c), HAS_MUL=ghost_mul is not None, HAS_ADD=ghost_add is not None,
            ACC=accumulator(features.dtype), **t.meta())
        grad_mul = sum_partials(partial_mul, ghost_mul) if ghost_mul is not None else features.new_empty(0)
        grad_add = sum_partials(partial_add, ghost_add) if ghost_add is not None else features.new_empty(0)
    return grad_features, grad_mul, grad_add, grad_attn


def _or(tensor, stand_in):
    """`tensor`, or `stand_in` as a never-read pointer argument when it is absent or empty."""
    return tensor if tensor is not None and tensor.numel() > 0 else stand_in
