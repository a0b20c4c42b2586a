"""Triton kernels of the fused ELSA attention `localattn::elsa_attention` (reference and full statement:
`ops/reference.py` `elsa_attention`): softmax over the K² taps of channels-last logits, ghost multiply/add
and aggregation of channels-last values, output channels-last.

    logits (B, Ho, Wo, G·K²), values (B, H, W, G·C), ghost_mul / ghost_add (G·C, K, K) or None
    out[b,i,j,g·C+c] = Σ_k (M[g·C+c,k]·softmax_k(logits[b,i,j,g·K²:(g+1)·K²])[k] + D[g·C+c,k])
                       · X[b, (i,j)·s + off_k, g·C+c]

Strip tiling of `common.py` over plane groups n = b·G + g. A program holds (K², pixels, C) tiles: the
taps × a few pixels × all channels of the head (channels are contiguous in memory: coalesced loads).
Backward, one kernel per strip: (0) log-sum-exp of the softmax for the strip's output rows and the halo
rows its input pixels read, into a per-program scratch; (1) over its output pixels: grad logits
(softmax backward of Σ_c g·X·M) and the partial ghost sums; (2) over its input pixels: grad values in
gather form. The ghost gradients (shared by the batch) are the sum of the partials over (b, strip) in
a fixed order (`common.sum_partials`). fp32 accumulation (fp64 for fp64), no atomics.
"""
import torch
import triton
import triton.language as tl

from .common import (Access, Geometry, accumulator, common_dtype, one_row, partials_launch, prepare, readers,
                     strip_launch, strip_ranges, sum_partials, tiling, torch_accumulator, window)

TILE_ELEMENTS = 8192  # elements of one (TAPS, BLOCK_P, CHANNELS) register tile


@triton.jit
def _ghost(ptr, g, C, ch, cmask, taps, tmask, K: tl.constexpr, ACC: tl.constexpr):
    """Ghost rows of head g as a (TAPS, CHANNELS) tile."""
    return tl.load(ptr + (g * C + ch)[None, :] * (K * K) + taps[:, None], mask=tmask[:, None] & cmask[None, :],
                   other=0.0).to(ACC)


@triton.jit
def _softmax(logit, amask, pmask):
    """Softmax over axis 0 of a (TAPS, BLOCK_P) tile (masked entries 0) and its log-sum-exp per column."""
    logit = tl.where(amask, logit, float("-inf"))
    top = tl.where(pmask, tl.max(logit, axis=0), 0.0)
    e = tl.where(amask, tl.exp(logit - top[None, :]), 0.0)
    total = tl.where(pmask, tl.sum(e, axis=0), 1.0)
    return e / total[None, :], top + tl.log(total)


@triton.jit
def _forward_kernel(logits_ptr, x_ptr, mul_ptr, add_ptr, out_ptr, G, C, H, W, Ho, Wo, stride, padding, dilation,
                    rows, strips, K: tl.constexpr, TAPS: tl.constexpr, BLOCK_P: tl.constexpr,
                    CHANNELS: tl.constexpr, HAS_MUL: tl.constexpr, HAS_ADD: tl.constexpr, ACC: tl.constexpr):
    n, o0, o1, _, _ = strip_ranges(H, W, Ho, Wo, stride, rows, strips)
    b = n // G
    g = n % G
    taps = tl.arange(0, TAPS)
    tmask = taps < K * K
    ch = tl.arange(0, CHANNELS)
    cmask = ch < C
    GC = G * C
    logits = logits_ptr + b.to(tl.int64) * Ho * Wo * G * (K * K) + g * (K * K)
    x = x_ptr + b.to(tl.int64) * H * W * GC + g * C
    out = out_ptr + b.to(tl.int64) * Ho * Wo * GC + g * C
    mul = tl.full((TAPS, CHANNELS), 1.0, ACC)
    add = tl.zeros((TAPS, CHANNELS), dtype=ACC)
    if HAS_MUL:
        mul = _ghost(mul_ptr, g, C, ch, cmask, taps, tmask, K, ACC)
    if HAS_ADD:
        add = _ghost(add_ptr, g, C, ch, cmask, taps, tmask, K, ACC)
    for p0 in range(o0, o1, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < o1
        amask = tmask[:, None] & pmask[None, :]
        logit = tl.load(logits + p[None, :] * G * (K * K) + taps[:, None], mask=amask, other=0.0).to(ACC)
        attn = _softmax(logit, amask, pmask)[0]
        offsets, xmask = window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K, False)
        v = tl.load(x + offsets[:, :, None] * GC + ch[None, None, :], mask=xmask[:, :, None] & cmask[None, None, :],
                    other=0.0).to(ACC)
        f = attn[:, :, None] * mul[:, None, :] + add[:, None, :]
        tl.store(out + p[:, None] * GC + ch[None, :], tl.sum(f * v, axis=0).to(out_ptr.dtype.element_ty),
                 mask=pmask[:, None] & cmask[None, :])


@triton.jit
def _backward_kernel(grad_ptr, logits_ptr, x_ptr, mul_ptr, add_ptr, glogits_ptr, gx_ptr, lse_ptr, pmul_ptr,
                     padd_ptr, B, G, C, H, W, Ho, Wo, stride, padding, dilation, rows, strips, margin,
                     K: tl.constexpr, TAPS: tl.constexpr, BLOCK_P: tl.constexpr, CHANNELS: tl.constexpr,
                     HAS_MUL: tl.constexpr, HAS_ADD: tl.constexpr, ACC: tl.constexpr):
    n, o0, o1, i0, i1 = strip_ranges(H, W, Ho, Wo, stride, rows, strips)
    b = n // G
    g = n % G
    strip = tl.program_id(0) % strips
    taps = tl.arange(0, TAPS)
    tmask = taps < K * K
    ch = tl.arange(0, CHANNELS)
    cmask = ch < C
    GC = G * C
    GKK = G * (K * K)
    logits = logits_ptr + b.to(tl.int64) * Ho * Wo * GKK + g * (K * K)
    glogits = glogits_ptr + b.to(tl.int64) * Ho * Wo * GKK + g * (K * K)
    x = x_ptr + b.to(tl.int64) * H * W * GC + g * C
    gx = gx_ptr + b.to(tl.int64) * H * W * GC + g * C
    grad = grad_ptr + b.to(tl.int64) * Ho * Wo * GC + g * C
    mul = tl.full((TAPS, CHANNELS), 1.0, ACC)
    add = tl.zeros((TAPS, CHANNELS), dtype=ACC)
    if HAS_MUL:
        mul = _ghost(mul_ptr, g, C, ch, cmask, taps, tmask, K, ACC)
    if HAS_ADD:
        add = _ghost(add_ptr, g, C, ch, cmask, taps, tmask, K, ACC)
    # (0) log-sum-exp of the output rows [e0, e1) that this strip's pixels read
    e0 = tl.maximum(o0 // tl.maximum(Wo, 1) - margin, 0) * Wo
    e1 = tl.minimum(o1 // tl.maximum(Wo, 1) + margin, Ho) * Wo
    lse = lse_ptr + tl.program_id(0).to(tl.int64) * (rows + 2 * margin) * Wo - e0
    for q0 in range(e0, e1, BLOCK_P):
        q = q0 + tl.arange(0, BLOCK_P)
        qmask = q < e1
        amask = tmask[:, None] & qmask[None, :]
        logit = tl.load(logits + q[None, :] * GKK + taps[:, None], mask=amask, other=0.0).to(ACC)
        row_lse = _softmax(logit, amask, qmask)[1]
        tl.store(lse + q, row_lse, mask=qmask)
    tl.debug_barrier()
    # (1) output pixels: grad logits, ghost partial sums
    sum_mul = tl.zeros((TAPS, CHANNELS), dtype=ACC)
    sum_add = tl.zeros((TAPS, CHANNELS), dtype=ACC)
    for p0 in range(o0, o1, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < o1
        amask = tmask[:, None] & pmask[None, :]
        logit = tl.load(logits + p[None, :] * GKK + taps[:, None], mask=amask, other=0.0).to(ACC)
        attn = _softmax(logit, amask, pmask)[0]
        offsets, xmask = window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K, False)
        v = tl.load(x + offsets[:, :, None] * GC + ch[None, None, :], mask=xmask[:, :, None] & cmask[None, None, :],
                    other=0.0).to(ACC)
        go = tl.load(grad + p[:, None] * GC + ch[None, :], mask=pmask[:, None] & cmask[None, :], other=0.0).to(ACC)
        gv = go[None, :, :] * v
        grad_attn = tl.sum(gv * mul[:, None, :], axis=2)
        grad_logit = attn * (grad_attn - tl.sum(attn * grad_attn, axis=0)[None, :])
        tl.store(glogits + p[None, :] * GKK + taps[:, None], grad_logit.to(glogits_ptr.dtype.element_ty), mask=amask)
        if HAS_MUL:
            sum_mul += tl.sum(gv * attn[:, :, None], axis=1)
        if HAS_ADD:
            sum_add += tl.sum(gv, axis=1)
    part = ((g * B + b).to(tl.int64) * strips + strip) * C * (K * K) + ch[None, :] * (K * K) + taps[:, None]
    part_mask = tmask[:, None] & cmask[None, :]
    if HAS_MUL:
        tl.store(pmul_ptr + part, sum_mul, mask=part_mask)
    if HAS_ADD:
        tl.store(padd_ptr + part, sum_add, mask=part_mask)
    # (2) input pixels: grad values, gather form
    for y0 in range(i0, i1, BLOCK_P):
        y = y0 + tl.arange(0, BLOCK_P)
        ymask = y < i1
        offsets, omask = readers(y, ymask, taps, W, H, Wo, Ho, stride, padding, dilation, K, 0, 0)
        logit = tl.load(logits + offsets * GKK + taps[:, None], mask=omask, other=0.0).to(ACC)
        row_lse = tl.load(lse + offsets, mask=omask, other=0.0)
        attn = tl.where(omask, tl.exp(logit - row_lse), 0.0)
        go = tl.load(grad + offsets[:, :, None] * GC + ch[None, None, :], mask=omask[:, :, None] & cmask[None, None, :],
                     other=0.0).to(ACC)
        f = attn[:, :, None] * mul[:, None, :] + add[:, None, :]
        tl.store(gx + y[:, None] * GC + ch[None, :], tl.sum(f * go, axis=0).to(gx_ptr.dtype.element_ty),
                 mask=ymask[:, None] & cmask[None, :])


def _sizes(logits, values, kernel_size):
    """(B, G, C, H, W)."""
    b, h, w, cv = values.shape
    heads = logits.shape[3] // (kernel_size * kernel_size)
    return b, heads, cv // heads, h, w


def _tiling(logits, values, kernel_size, dilation, stride):
    """(tiling, BLOCK_P, CHANNELS, halo margin in output rows) of one call."""
    b, heads, c, h, w = _sizes(logits, values, kernel_size)
    padding = (kernel_size - 1) // 2 * dilation
    t = tiling(b * heads, Geometry(h, w, h // stride, w // stride, kernel_size, stride, padding, dilation))
    channels = triton.next_power_of_2(max(c, 1))
    block_p = max(1, min(TILE_ELEMENTS // (t.taps * channels), t.block_p))
    margin = triton.cdiv(padding, stride) + 1
    if max(h * w * heads * c, (h // stride) * (w // stride) * logits.shape[3]) > 2**31 - 1:
        raise ValueError(f"localattn::elsa_attention: a {h}x{w} sample is too large for int32 offsets")
    return t, block_p, channels, margin


def _lse_rows(t, margin, strip):
    out = t.out_rows(strip)
    return range(max(out.start - margin, 0), min(out.stop + margin, t.geometry.out_height))


def _ghosts(ghost_mul, ghost_add, elements, size, mode):
    """Accesses of the ghost tensors: every program reads (or writes partials of) its head's `elements`."""
    return [Access(name, mode, 1, elements, one_row, size)
            for name, ghost in (("ghost_mul", ghost_mul), ("ghost_add", ghost_add)) if ghost is not None]


def forward_launches(logits, values, ghost_mul, ghost_add, kernel_size, dilation, stride):
    """The launches of `elsa_attention` (shapes and dtypes only: meta tensors will do)."""
    t, *_ = _tiling(logits, values, kernel_size, dilation, stride)
    g, c, e, kk = t.geometry, _sizes(logits, values, kernel_size)[2], values.element_size(), kernel_size**2
    return [strip_launch("elsa_attention", t, [
        Access("logits", "r", kk, g.out_width, t.out_rows, e),
        Access("values", "r", c, g.width, lambda s: g.neighbour_rows(t.out_rows(s)), e),
        *_ghosts(ghost_mul, ghost_add, c * kk, e, "r"),
        Access("out", "w", c, g.out_width, t.out_rows, e)])]


def backward_launches(grad_out, logits, values, ghost_mul, ghost_add, kernel_size, dilation, stride):
    """The launches of `elsa_attention_backward` (shapes and dtypes only)."""
    t, _, _, margin = _tiling(logits, values, kernel_size, dilation, stride)
    b, heads, c, _, _ = _sizes(logits, values, kernel_size)
    g, e, kk = t.geometry, values.element_size(), kernel_size**2
    acc = torch_accumulator(values.dtype).itemsize
    lse_rows = lambda s: _lse_rows(t, margin, s)  # noqa: E731
    main = strip_launch("elsa_attention_backward", t, [
        Access("grad_out", "r", c, g.out_width, lambda s: set(t.out_rows(s)) | g.reader_rows(t.in_rows(s)), e),
        Access("logits", "r", kk, g.out_width, lse_rows, e),
        Access("values", "r", c, g.width, lambda s: g.neighbour_rows(t.out_rows(s)), e),
        *_ghosts(ghost_mul, ghost_add, c * kk, e, "r"),
        Access("lse scratch", "w", 1, g.out_width, lse_rows, acc),
        Access("lse scratch", "r", 1, g.out_width, lse_rows, acc),
        Access("grad_logits", "w", kk, g.out_width, t.out_rows, e),
        Access("grad_values", "w", c, g.width, t.in_rows, e),
        *_ghosts(ghost_mul, ghost_add, c * kk, acc, "w")])
    reductions = [partials_launch(f"elsa_attention_backward {name} sum", heads, b * t.strips, c * kk, values.dtype)
                  for name, ghost in (("ghost_mul", ghost_mul), ("ghost_add", ghost_add)) if ghost is not None]
    return [main, *reductions]


def elsa_attention(logits, values, ghost_mul, ghost_add, kernel_size, dilation, stride):
    """Fused ELSA attention forward: -> (B, H//s, W//s, G·C) channels-last, in the dtype of `values`."""
    logits, values, ghost_mul, ghost_add = prepare(logits, values, ghost_mul, ghost_add)
    common_dtype("elsa_attention", logits, values, ghost_mul, ghost_add)
    b, heads, c, h, w = _sizes(logits, values, kernel_size)
    out = values.new_empty((b, h // stride, w // stride, heads * c))
    if out.numel() == 0:
        return out
    t, block_p, channels, _ = _tiling(logits, values, kernel_size, dilation, stride)
    with torch.cuda.device_of(values):
        _forward_kernel[t.grid](
            logits, values, _or(ghost_mul, values), _or(ghost_add, values), out, heads, c, *t.runtime(),
            K=kernel_size, TAPS=t.taps, BLOCK_P=block_p, CHANNELS=channels, HAS_MUL=ghost_mul is not None,
            HAS_ADD=ghost_add is not None, ACC=accumulator(values.dtype))
    return out


def elsa_attention_backward(grad_out, logits, values, ghost_mul, ghost_add, kernel_size, dilation, stride):
    """Gradients (grad_logits, grad_values, grad_ghost_mul, grad_ghost_add); an absent ghost's is empty."""
    grad_out, logits, values, ghost_mul, ghost_add = prepare(grad_out, logits, values, ghost_mul, ghost_add)
    common_dtype("elsa_attention_backward", grad_out, logits, values, ghost_mul, ghost_add)
    b, heads, c, h, w = _sizes(logits, values, kernel_size)
    kk = kernel_size * kernel_size
    if grad_out.numel() == 0 or values.numel() == 0:
        ghosts = [torch.zeros_like(t) if t is not None else values.new_empty(0) for t in (ghost_mul, ghost_add)]
        return torch.zeros_like(logits), torch.zeros_like(values), *ghosts
    t, block_p, channels, margin = _tiling(logits, values, kernel_size, dilation, stride)
    scratch = dict(dtype=torch_accumulator(values.dtype), device=values.device)
    lse = torch.empty((t.grid[0], (t.rows + 2 * margin) * t.geometry.out_width), **scratch)
    partial_mul = torch.empty((heads, b * t.strips, c, kk), **scratch) if ghost_mul is not None else None
    partial_add = torch.empty((heads, b * t.strips, c, kk), **scratch) if ghost_add is not None else None
    grad_logits, grad_values = torch.empty_like(logits), torch.empty_like(values)
    with torch.cuda.device_of(values):
        _backward_kernel[t.grid](
            grad_out, logits, values, _or(ghost_mul, values), _or(ghost_add, values), grad_logits, grad_values, lse,
            _or(partial_mul, lse), _or(partial_add, lse), b, heads, c, *t.runtime(), margin, K=kernel_size,
            TAPS=t.taps, BLOCK_P=block_p, CHANNELS=channels, HAS_MUL=ghost_mul is not None,
            HAS_ADD=ghost_add is not None, ACC=accumulator(values.dtype))
        grads = [sum_partials(part, ghost) if ghost is not None else values.new_empty(0)
                 for part, ghost in ((partial_mul, ghost_mul), (partial_add, ghost_add))]
    return grad_logits, grad_values, *grads


def _or(tensor, stand_in):
    """`tensor`, or `stand_in` as a never-read pointer argument when it is absent."""
    return tensor if tensor is not None else stand_in
