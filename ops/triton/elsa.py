"""Triton kernels of the ELSA operator (spec elsa.md §1.2 forward, §1.6 gradients).

Tensors are contiguous NCHW; `features` (N,C,H,W), `ghost_mul`/`ghost_add` (N,C,K,K) or None,
`h_attn` (N,K²,H//s,W//s). Zero borders, output pixel (i,j) centred on input pixel (i·s, j·s).
Every output element is written by exactly one program (no atomics), accumulation in fp32 (fp64 for
fp64 inputs), results in the input dtype.
"""
import torch
import triton
import triton.language as tl

from .common import MAX_BLOCK_CHANNELS, MAX_BLOCK_PIXELS, accumulator, block, neighbour, reader, tile, tile_grid


@triton.jit
def _filter(mul_ptr, add_ptr, attn, mc, k, cmask, HAS_MUL: tl.constexpr, HAS_ADD: tl.constexpr, ACC: tl.constexpr):
    """Dynamic filter M[c,k]·A + D[c,k] (BLOCK_C × BLOCK_P) for ghost rows `mc` = (n·C + c)·K²."""
    f = attn[None, :]
    if HAS_MUL:
        f = tl.load(mul_ptr + mc + k, mask=cmask, other=0.0).to(ACC)[:, None] * f
    if HAS_ADD:
        f = f + tl.load(add_ptr + mc + k, mask=cmask, other=0.0).to(ACC)[:, None]
    return f


@triton.jit
def _forward_kernel(x_ptr, mul_ptr, add_ptr, attn_ptr, out_ptr, C, H, W, Ho, Wo, padding, dilation, stride,
                    K: tl.constexpr, HAS_MUL: tl.constexpr, HAS_ADD: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    L = Ho * Wo
    n, c, p = tile(L, BLOCK_C, BLOCK_P)
    cmask = c < C
    pmask = p < L
    oy = p // Wo
    ox = p % Wo
    planes = (n * C + c)[:, None]
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for ky in range(K):
        iy, vy = neighbour(oy, ky, stride, padding, dilation, H, False)
        for kx in range(K):
            ix, vx = neighbour(ox, kx, stride, padding, dilation, W, False)
            k = ky * K + kx
            attn = tl.load(attn_ptr + (n * K * K + k) * L + p, mask=pmask, other=0.0).to(ACC)
            f = _filter(mul_ptr, add_ptr, attn, (n * C + c) * K * K, k, cmask, HAS_MUL, HAS_ADD, ACC)
            xmask = cmask[:, None] & (pmask & vy & vx)[None, :]
            x = tl.load(x_ptr + planes * H * W + (iy * W + ix)[None, :], mask=xmask, other=0.0).to(ACC)
            acc += f * x
    omask = cmask[:, None] & pmask[None, :]
    tl.store(out_ptr + planes * L + p[None, :], acc.to(out_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _features_grad_kernel(g_ptr, mul_ptr, add_ptr, attn_ptr, gx_ptr, C, H, W, Ho, Wo, padding, dilation, stride,
                          K: tl.constexpr, HAS_MUL: tl.constexpr, HAS_ADD: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad X[n,c,y,x] = Σ_k g[n,c,o]·F[n,c,k,o] over the output pixels o whose tap k reads (y,x)."""
    L = Ho * Wo
    n, c, p = tile(H * W, BLOCK_C, BLOCK_P)
    cmask = c < C
    pmask = p < H * W
    y = p // W
    x = p % W
    planes = (n * C + c)[:, None]
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for ky in range(K):
        oy, vy = reader(y, ky, stride, padding, dilation, Ho)
        for kx in range(K):
            ox, vx = reader(x, kx, stride, padding, dilation, Wo)
            k = ky * K + kx
            o = oy * Wo + ox
            omask = pmask & vy & vx
            attn = tl.load(attn_ptr + (n * K * K + k) * L + o, mask=omask, other=0.0).to(ACC)
            f = _filter(mul_ptr, add_ptr, attn, (n * C + c) * K * K, k, cmask, HAS_MUL, HAS_ADD, ACC)
            g = tl.load(g_ptr + planes * L + o[None, :], mask=cmask[:, None] & omask[None, :], other=0.0).to(ACC)
            acc += f * g
    tl.store(gx_ptr + planes * H * W + p[None, :], acc.to(gx_ptr.dtype.element_ty),
             mask=cmask[:, None] & pmask[None, :])


@triton.jit
def _attention_grad_kernel(g_ptr, x_ptr, mul_ptr, ga_ptr, C, H, W, Ho, Wo, padding, dilation, stride,
                           K: tl.constexpr, HAS_MUL: tl.constexpr, ACC: tl.constexpr,
                           BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad A[n,k,o] = Σ_c g[n,c,o]·X[n,c,o·s+off_k]·M[n,c,k]; axis 1 of the grid is the tap k."""
    L = Ho * Wo
    pid = tl.program_id(0).to(tl.int64)
    pixel_blocks = tl.cdiv(L, BLOCK_P)
    n = pid // pixel_blocks
    p = (pid % pixel_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    k = tl.program_id(1)
    pmask = p < L
    iy, vy = neighbour(p // Wo, k // K, stride, padding, dilation, H, False)
    ix, vx = neighbour(p % Wo, k % K, stride, padding, dilation, W, False)
    xvalid = pmask & vy & vx
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        planes = (n * C + c)[:, None]
        g = tl.load(g_ptr + planes * L + p[None, :], mask=cmask[:, None] & pmask[None, :], other=0.0).to(ACC)
        x = tl.load(x_ptr + planes * H * W + (iy * W + ix)[None, :], mask=cmask[:, None] & xvalid[None, :],
                    other=0.0).to(ACC)
        gx = g * x
        if HAS_MUL:
            gx = gx * tl.load(mul_ptr + (n * C + c) * K * K + k, mask=cmask, other=0.0).to(ACC)[:, None]
        acc += gx
    tl.store(ga_ptr + (n * K * K + k) * L + p, tl.sum(acc, axis=0).to(ga_ptr.dtype.element_ty), mask=pmask)


@triton.jit
def _ghost_grad_kernel(g_ptr, x_ptr, attn_ptr, gm_ptr, gd_ptr, C, H, W, Ho, Wo, padding, dilation, stride,
                       K: tl.constexpr, WANT_MUL: tl.constexpr, WANT_ADD: tl.constexpr, ACC: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad M[n,c,k] = Σ_o g·X[o·s+off_k]·A[n,k,o], grad D[n,c,k] = Σ_o g·X[o·s+off_k].

    Grid axis 0 = (n, channel block), axis 1 = tap k; each program sums over all output pixels.
    """
    L = Ho * Wo
    pid = tl.program_id(0).to(tl.int64)
    channel_blocks = tl.cdiv(C, BLOCK_C)
    n = pid // channel_blocks
    c = (pid % channel_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    k = tl.program_id(1)
    cmask = c < C
    planes = (n * C + c)[:, None]
    acc_mul = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    acc_add = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for p0 in range(0, L, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < L
        iy, vy = neighbour(p // Wo, k // K, stride, padding, dilation, H, False)
        ix, vx = neighbour(p % Wo, k % K, stride, padding, dilation, W, False)
        g = tl.load(g_ptr + planes * L + p[None, :], mask=cmask[:, None] & pmask[None, :], other=0.0).to(ACC)
        x = tl.load(x_ptr + planes * H * W + (iy * W + ix)[None, :],
                    mask=cmask[:, None] & (pmask & vy & vx)[None, :], other=0.0).to(ACC)
        gx = g * x
        if WANT_MUL:
            attn = tl.load(attn_ptr + (n * K * K + k) * L + p, mask=pmask, other=0.0).to(ACC)
            acc_mul += gx * attn[None, :]
        if WANT_ADD:
            acc_add += gx
    rows = (n * C + c) * K * K + k
    if WANT_MUL:
        tl.store(gm_ptr + rows, tl.sum(acc_mul, axis=1).to(gm_ptr.dtype.element_ty), mask=cmask)
    if WANT_ADD:
        tl.store(gd_ptr + rows, tl.sum(acc_add, axis=1).to(gd_ptr.dtype.element_ty), mask=cmask)


def _geometry(features, kernel_size, dilation, stride):
    """Kernel arguments describing sizes: C, H, W, Ho, Wo, padding, dilation, stride."""
    _, c, h, w = features.shape
    return (c, h, w, h // stride, w // stride, (kernel_size - 1) // 2 * dilation, dilation, stride)


def elsa(features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride):
    """ELSA forward: (N,C,H,W) features -> (N,C,H//s,W//s), see spec elsa.md §1.2."""
    n, c, h, w = features.shape
    out = features.new_empty((n, c, h // stride, w // stride))
    geometry = _geometry(features, kernel_size, dilation, stride)
    grid, blocks = tile_grid(n, c, out.shape[2] * out.shape[3])
    with torch.cuda.device_of(features):
        _forward_kernel[grid](
            features, _or(ghost_mul, features), _or(ghost_add, features), h_attn, out, *geometry,
            K=kernel_size, HAS_MUL=ghost_mul is not None, HAS_ADD=ghost_add is not None,
            ACC=accumulator(features.dtype), **blocks)
    return out


def elsa_backward(grad_out, features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride):
    """ELSA gradients (grad_features, grad_ghost_mul, grad_ghost_add, grad_h_attn), spec elsa.md §1.6.

    The gradient of an absent (None) ghost tensor is an empty tensor.
    """
    grad_out = grad_out.contiguous()
    n, c, h, w = features.shape
    pixels = grad_out.shape[2] * grad_out.shape[3]
    geometry = _geometry(features, kernel_size, dilation, stride)
    acc = accumulator(features.dtype)
    mul, add = _or(ghost_mul, features), _or(ghost_add, features)
    grad_features = torch.empty_like(features)
    grad_attn = torch.empty_like(h_attn)
    grad_mul = torch.empty_like(ghost_mul) if ghost_mul is not None else features.new_empty(0)
    grad_add = torch.empty_like(ghost_add) if ghost_add is not None else features.new_empty(0)
    block_c = block(c, MAX_BLOCK_CHANNELS)
    block_p = block(pixels, MAX_BLOCK_PIXELS)
    taps = kernel_size * kernel_size
    with torch.cuda.device_of(features):
        grid, blocks = tile_grid(n, c, h * w)
        _features_grad_kernel[grid](
            grad_out, mul, add, h_attn, grad_features, *geometry, K=kernel_size,
            HAS_MUL=ghost_mul is not None, HAS_ADD=ghost_add is not None, ACC=acc, **blocks)
        _attention_grad_kernel[(n * triton.cdiv(pixels, block_p), taps)](
            grad_out, features, mul, grad_attn, *geometry, K=kernel_size, HAS_MUL=ghost_mul is not None,
            ACC=acc, BLOCK_C=block_c, BLOCK_P=block_p)
        if ghost_mul is not None or ghost_add is not None:
            _ghost_grad_kernel[(n * triton.cdiv(c, block_c), taps)](
                grad_out, features, h_attn, _or(grad_mul, grad_features), _or(grad_add, grad_features),
                *geometry, K=kernel_size, WANT_MUL=ghost_mul is not None, WANT_ADD=ghost_add is not None,
                ACC=acc, BLOCK_C=block_c, BLOCK_P=block_p)
    return grad_features, grad_mul, grad_add, grad_attn


def _or(tensor, stand_in):
    """`tensor`, or `stand_in` as a never-read pointer argument when it is absent or empty."""
    return tensor if tensor is not None and tensor.numel() > 0 else stand_in
