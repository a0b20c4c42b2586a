"""Triton kernel of the fused SAN patchwise attention `localattn::san_patchwise` (forward; reference and
full statement: `ops/reference.py` `san_patchwise`; its backward `ops/_san_fused.py` recomputes z with
the unfused ops, which have Triton kernels too).

    z[n,j,l] = Σ_m weight5[j,m]·hidden[n,m,l] + bias5[j]        j = w·K² + t  (w < C_w, t < K²)
    out[n,c,l] = Σ_t z[n, (c mod C_w)·K² + t, l] · value~[n, c, neighbour t of l]      (reflect, stride 1)

A program owns a pixel range and a chunk of the C_w weight channels. The pixel range is a strip of one
image (the strip tiling of `common.py`), or, where a whole image is one strip, `images` whole images: a
program gathers its chunk of weight5 (C_w·K² × M) once, so at small maps with many channels (SAN10's 7²
stage: 0.8 MB of weight5 against 0.2 MB of an image's activations) several images share that gather.
Weight-channel chunks split the work of a pixel range over programs that each read the hidden features of
the range (re-read per chunk: the chunk count keeps that within 1/HIDDEN_SHARE of the range's bytes) and
only the value / output channels c with c mod C_w in their chunk. Per block of BLOCK_P pixels and weight
channel w, the (K², BLOCK_P) tile of z is built in registers one hidden channel at a time (rank-1 updates,
each weight5 element used for BLOCK_P pixels) and aggregates the C / C_w value channels of w; no softmax.
Nothing K²-sized is written to memory. Parameters in any float dtype (used in fp32, fp64 for fp64 values).
"""
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .common import (MAX_GRID_X, MAX_PLANE, TILE_ELEMENTS, Access, Geometry, Launch, Tiling, accumulator,
                     common_dtype, prepare, tiling, window)

WEIGHT_SHARE = 4  # images grouped so that a program's weight5 gather adds <= 1/WEIGHT_SHARE to its activations
HIDDEN_SHARE = 4  # weight-channel chunks re-read the hidden features at most 1/HIDDEN_SHARE of a range's bytes
MIN_PROGRAMS = 528  # chunks are added (within HIDDEN_SHARE) until the grid has 4 programs per SM of a 132-SM GPU


@triton.jit
def _forward_kernel(hidden_ptr, v_ptr, w5_ptr, b5_ptr, out_ptr, N, M, Cw, C, H, W, Ho, Wo, stride, padding, dilation,
                    rows, strips, images, chunks, chunk_channels, K: tl.constexpr, TAPS: tl.constexpr,
                    BLOCK_P: tl.constexpr, ACC: tl.constexpr):
    pid = tl.program_id(0)
    chunk = pid % chunks
    strip = (pid // chunks) % strips
    n0 = pid // (chunks * strips) * images
    HW = H * W
    r0 = strip * rows
    # the program's pixels, numbered from pixel (r0, 0) of image n0 on through its images (int32)
    q1 = (tl.minimum(r0 + rows, Ho) - r0) * Wo + (tl.minimum(images, N - n0) - 1) * HW
    w0 = chunk * chunk_channels
    w1 = tl.minimum(w0 + chunk_channels, Cw)
    taps = tl.arange(0, TAPS)
    tmask = taps < K * K
    for q0 in range(0, q1, BLOCK_P):
        q = q0 + tl.arange(0, BLOCK_P)
        pmask = q < q1
        image = (q + r0 * Wo) // HW
        p = r0 * Wo + q - image * HW  # in-plane pixel
        n = (n0 + image).to(tl.int64)
        offsets, nmask = window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K, True)
        for w in range(w0, w1):
            rows5 = w * (K * K) + taps  # rows of weight5 / entries of bias5 of weight channel w
            z = tl.zeros((TAPS, BLOCK_P), dtype=ACC) + tl.load(b5_ptr + rows5, mask=tmask, other=0.0).to(ACC)[:, None]
            for m in range(M):
                hidden = tl.load(hidden_ptr + (n * M + m) * HW + p, mask=pmask, other=0.0).to(ACC)
                w5 = tl.load(w5_ptr + rows5 * M + m, mask=tmask, other=0.0).to(ACC)
                z += w5[:, None] * hidden[None, :]
            for c in range(w, C, Cw):
                planes = (n * C + c) * HW
                v = tl.load(v_ptr + planes[None, :] + offsets, mask=nmask, other=0.0).to(ACC)
                tl.store(out_ptr + planes + p, tl.sum(z * v, axis=0).to(out_ptr.dtype.element_ty), mask=pmask)


@dataclass(frozen=True)
class PatchwiseTiling:
    """Launch configuration of one `san_patchwise` call (see the module docstring)."""
    strips: Tiling  # the strip tiling of one image
    images: int  # whole images per program (1 where an image has several strips)
    weight_channels: int  # C_w
    chunk_channels: int  # weight channels per chunk (the last chunk may have fewer)
    block_p: int

    @property
    def chunks(self):
        return triton.cdiv(self.weight_channels, self.chunk_channels)

    @property
    def grid(self):
        return (triton.cdiv(self.strips.batch, self.images) * self.strips.strips * self.chunks,)

    def runtime(self):
        """Runtime kernel arguments from H on: H, W, Ho, Wo, stride, padding, dilation, rows, strips, images,
        chunks, chunk_channels."""
        return (*self.strips.runtime(), self.images, self.chunks, self.chunk_channels)

    def program(self, pid):
        """(images, output rows, weight channels) of program `pid`, decomposed as the kernel does."""
        chunk, strip = pid % self.chunks, pid // self.chunks % self.strips.strips
        n0 = pid // (self.chunks * self.strips.strips) * self.images
        w0 = chunk * self.chunk_channels
        return (min(self.images, self.strips.batch - n0), self.strips.out_rows(strip),
                range(w0, min(w0 + self.chunk_channels, self.weight_channels)))


def _tiling(hidden, value, weight5, kernel_size, dilation):
    """The `PatchwiseTiling` of one call: whole images grouped until weight5's gather is <= 1/WEIGHT_SHARE of
    their activation bytes; weight-channel chunks added up to MIN_PROGRAMS programs, as far as re-reading the
    hidden features allows."""
    n, m, h, w = hidden.shape
    cw = max(weight5.shape[0] // kernel_size**2, 1)
    padding = dilation * (kernel_size - 1) // 2
    t = tiling(n, Geometry(h, w, h, w, kernel_size, 1, padding, dilation, True))
    hidden_bytes = max(h * w * m * hidden.element_size(), 1)
    image_bytes = hidden_bytes + 2 * h * w * value.shape[1] * value.element_size()
    images = 1
    if t.strips == 1:
        weight_bytes = weight5.numel() * weight5.element_size()
        images = max(1, min(n, triton.cdiv(WEIGHT_SHARE * weight_bytes, image_bytes), MAX_PLANE // max(h * w, 1)))
    ranges = triton.cdiv(n, images) * t.strips
    chunks = max(1, min(cw, 1 + image_bytes // (HIDDEN_SHARE * hidden_bytes), triton.cdiv(MIN_PROGRAMS, ranges)))
    block_p = max(16, min(TILE_ELEMENTS // t.taps, triton.next_power_of_2(max(images * t.rows * w, 1))))
    tiles = PatchwiseTiling(t, images, cw, triton.cdiv(cw, chunks), block_p)
    if tiles.grid[0] > MAX_GRID_X:
        raise ValueError(f"localattn triton: {tiles.grid[0]} san_patchwise programs exceed the CUDA grid limit")
    return tiles


def forward_launches(hidden, value, weight5, bias5, kernel_size, dilation):
    """The launches of `san_patchwise` (shapes and dtypes only: meta tensors will do). Rows are counted per
    program: its images × channels × rows of each plane it touches; weight5 and bias5 per weight channel."""
    tiles = _tiling(hidden, value, weight5, kernel_size, dilation)
    g, m, c = tiles.strips.geometry, hidden.shape[1], value.shape[1]
    taps = kernel_size**2

    def counted(rows_of):
        def rows(pid):
            images, out_rows, weights = tiles.program(pid)
            return range(rows_of(images, out_rows, weights))
        return rows

    def value_channels(weights):
        return sum(len(range(j, c, tiles.weight_channels)) for j in weights)

    return [Launch("san_patchwise", tiles.grid, 1, tiles.grid[0], (
        Access("hidden", "r", 1, g.width, counted(lambda i, rows, _: i * m * len(rows)), hidden.element_size()),
        Access("value", "r", 1, g.width, counted(
            lambda i, rows, ws: i * value_channels(ws) * len(g.neighbour_rows(rows))), value.element_size()),
        Access("weight5", "r", 1, taps * m, counted(lambda i, rows, ws: len(ws)), weight5.element_size()),
        Access("bias5", "r", 1, taps, counted(lambda i, rows, ws: len(ws)), bias5.element_size()),
        Access("out", "w", 1, g.width, counted(lambda i, rows, ws: i * value_channels(ws) * len(rows)),
               value.element_size())))]


def san_patchwise(hidden, value, weight5, bias5, kernel_size, dilation):
    """Fused SAN patchwise attention forward: -> (N, C, H, W) in the dtype of `value`."""
    hidden, value, weight5, bias5 = prepare(hidden, value, weight5, bias5)
    common_dtype("san_patchwise", hidden, value)
    out = torch.empty_like(value)
    if out.numel() == 0:
        return out
    tiles = _tiling(hidden, value, weight5, kernel_size, dilation)
    with torch.cuda.device_of(value):
        _forward_kernel[tiles.grid](hidden, value, weight5, bias5, out, hidden.shape[0], hidden.shape[1],
                                    tiles.weight_channels, value.shape[1], *tiles.runtime(), K=kernel_size,
                                    TAPS=tiles.strips.taps, BLOCK_P=tiles.block_p, ACC=accumulator(value.dtype))
    return out
