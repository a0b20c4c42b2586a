"""Pieces shared by the Triton kernels: the strip tiling (launch configuration), neighbour-index
arithmetic, input preparation and the bytes each launch moves (for `benchmarks/roofline.py`).

Tiling. Every kernel runs one program per (plane group `n`, strip of `rows` consecutive output rows)
(`san_patchwise` also groups whole images and splits weight channels over programs: see its module);
the program holds all K² taps (a `(TAPS, BLOCK_P)` register tile, TAPS = K² rounded up to a power of
two) and walks all channels of its plane group and all pixels of its strip in `BLOCK_P` steps, so each
input element is loaded by one program only, apart from the (K−1)·d halo rows that neighbouring strips
share. `rows` is chosen so that the halo adds at most 1/ROW_REUSE to the rows a strip reads. The grid is
one-dimensional (N·strips programs; CUDA allows 2³¹−1 on axis 0, 65535 on axes 1 and 2).

Indices: plane bases (n, c) are int64, offsets inside a plane int32 (a plane must have < 2³¹ elements).

Every kernel works on one axis-separable neighbourhood: output coordinate `o` and tap `t` read the
padded input coordinate `u = o*stride - padding + t*dilation`. `neighbour` maps `u` into the image
(zero padding: flagged out of range; reflect padding: mirrored once); `reader` inverts it for the
gather-form input gradients, and `mirror` enumerates the (up to 3) padded coordinates per axis that
reflect padding maps onto one image coordinate.
"""
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

ROW_REUSE = 4  # halo rows add at most 1/ROW_REUSE to the rows a strip reads
TILE_ELEMENTS = 4096  # elements of one (TAPS, BLOCK_P) register tile
MIN_STRIP_PIXELS = 256  # a strip covers at least this many output pixels (when the image has them)
MAX_GRID_X = 2**31 - 1
MAX_PLANE = 2**31 - 1


@dataclass(frozen=True)
class Geometry:
    """Window arithmetic of one op call: input H×W, output Ho×Wo, K, stride, padding, dilation, reflect."""
    height: int
    width: int
    out_height: int
    out_width: int
    kernel_size: int
    stride: int
    padding: int
    dilation: int
    reflect: bool = False

    def args(self):
        """The runtime kernel arguments H, W, Ho, Wo, stride, padding, dilation, in that order."""
        return (self.height, self.width, self.out_height, self.out_width, self.stride, self.padding, self.dilation)

    def neighbour_rows(self, out_rows):
        """Input rows read by output rows `out_rows` (the row part of `neighbour`)."""
        rows = set()
        for o in out_rows:
            for a in range(self.kernel_size):
                u = o * self.stride - self.padding + a * self.dilation
                if self.reflect:
                    u = -u if u < 0 else (2 * (self.height - 1) - u if u >= self.height else u)
                if 0 <= u < self.height:
                    rows.add(u)
        return rows

    def reader_rows(self, in_rows):
        """Output rows whose taps read input rows `in_rows` (the row part of `mirror` + `reader`)."""
        rows = set()
        for y in in_rows:
            for u in [y] + ([-y, 2 * (self.height - 1) - y] if self.reflect else []):
                for a in range(self.kernel_size):
                    t = u + self.padding - a * self.dilation
                    if t >= 0 and t % self.stride == 0 and t // self.stride < self.out_height:
                        rows.add(t // self.stride)
        return rows


@dataclass(frozen=True)
class Tiling:
    """Launch configuration of the strip kernels of one op call (see the module docstring)."""
    batch: int
    geometry: Geometry
    rows: int  # output rows per strip
    strips: int  # strips per plane group
    taps: int  # K² rounded up to a power of two
    block_p: int  # pixels per step

    @property
    def grid(self):
        return (self.batch * self.strips,)

    def meta(self):
        """Constexpr kernel arguments."""
        return dict(K=self.geometry.kernel_size, TAPS=self.taps, BLOCK_P=self.block_p)

    def runtime(self):
        """Runtime kernel arguments: H, W, Ho, Wo, stride, padding, dilation, rows, strips."""
        return (*self.geometry.args(), self.rows, self.strips)

    def out_rows(self, strip):
        """Output rows of `strip`."""
        return range(strip * self.rows, min((strip + 1) * self.rows, self.geometry.out_height))

    def in_rows(self, strip):
        """Input rows whose gradient `strip` writes (the last strip also takes the rows below Ho·s)."""
        g = self.geometry
        end = g.height if strip == self.strips - 1 else (strip + 1) * self.rows * g.stride
        return range(strip * self.rows * g.stride, end)


def tiling(batch, geometry):
    """The strip tiling of an op on `batch` plane groups with window `geometry`."""
    g = geometry
    halo = (g.kernel_size - 1) * g.dilation
    rows = max(1, triton.cdiv(ROW_REUSE * halo, g.stride), triton.cdiv(MIN_STRIP_PIXELS, max(g.out_width, 1)))
    rows = min(rows, max(g.out_height, 1))
    strips = max(1, triton.cdiv(g.out_height, rows))
    taps = triton.next_power_of_2(g.kernel_size**2)
    block_p = min(TILE_ELEMENTS // taps, triton.next_power_of_2(max(rows * max(g.out_width, g.width), 1)))
    if batch * strips > MAX_GRID_X:
        raise ValueError(f"localattn triton: {batch} planes x {strips} strips exceed the CUDA grid limit")
    if max(g.height * g.width, g.out_height * g.out_width * g.kernel_size**2) > MAX_PLANE:
        raise ValueError(f"localattn triton: a {g.height}x{g.width} plane is too large for int32 offsets")
    return Tiling(batch, geometry, rows, strips, taps, max(block_p, 16))


@dataclass(frozen=True)
class Access:
    """One tensor a kernel reads ('r') or writes ('w'): `planes` planes of `row_elements` per row,
    `rows(strip)` = the rows of its plane a program of that strip touches."""
    tensor: str
    mode: str
    planes: int
    row_elements: int
    rows: object
    element_size: int


@dataclass(frozen=True)
class Launch:
    """One kernel launch of an op: `grid`, and per plane group `programs` programs whose accesses
    (`Access.rows(i)` for program i of a group) are the same for every group."""
    kernel: str
    grid: tuple
    groups: int
    programs: int
    accesses: tuple

    def bytes(self):
        """Bytes moved, counting each program's distinct rows of every tensor once."""
        per_group = sum(len(a.rows(i)) * a.row_elements * a.planes * a.element_size
                        for i in range(self.programs) for a in self.accesses)
        return self.groups * per_group


def strip_launch(kernel, tiling, accesses):
    """The `Launch` of a strip kernel."""
    return Launch(kernel, tiling.grid, tiling.batch, tiling.strips, tuple(accesses))


def one_row(_):
    """`Access.rows` of a small tensor that every program reads (or writes) whole, as one row."""
    return (0,)


def prepare(*tensors):
    """Contiguous copies (or the tensors themselves) of the launch inputs; None stays None."""
    return tuple(t.contiguous() if t is not None else None for t in tensors)


def common_dtype(op, *tensors):
    """The one floating dtype of the (non-None) tensors, else a TypeError naming the op."""
    dtypes = {t.dtype for t in tensors if t is not None}
    if len(dtypes) != 1:
        raise TypeError(f"localattn::{op}: all tensors must share one dtype, got {sorted(map(str, dtypes))} "
                        "(under autocast, cast the inputs to one dtype first)")
    return dtypes.pop()


def accumulator(dtype):
    """Triton accumulation dtype for tensors of `dtype`: fp64 for fp64, fp32 otherwise."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def torch_accumulator(dtype):
    """torch dtype of `accumulator(dtype)`, for scratch buffers."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@triton.jit
def neighbour(o, tap, stride, padding, dilation, size, REFLECT: tl.constexpr):
    """Input coordinate read by output coordinate `o` at `tap` along one axis; (coord, in_image)."""
    u = o * stride - padding + tap * dilation
    if REFLECT:
        u = tl.where(u < 0, -u, u)
        u = tl.where(u >= size, 2 * (size - 1) - u, u)
    return u, (u >= 0) & (u < size)


@triton.jit
def reader(u, tap, stride, padding, dilation, out_size):
    """Output coordinate whose `tap` reads padded coordinate `u` along one axis; (o, exists)."""
    t = u + padding - tap * dilation
    o = t // stride
    return o, (t >= 0) & (t % stride == 0) & (o < out_size)


@triton.jit
def mirror(y, size, M: tl.constexpr):
    """Padded coordinate that reflect padding maps onto `y`: 0 = itself, 1 = below 0, 2 = past the end."""
    if M == 0:
        u = y
        exists = y >= 0
    elif M == 1:
        u = -y
        exists = y > 0
    else:
        u = 2 * (size - 1) - y
        exists = y < size - 1
    return u, exists


@triton.jit
def strip_ranges(H, W, Ho, Wo, stride, rows, strips):
    """(plane group n, output flat pixel range, input flat pixel range) of this program (int32)."""
    pid = tl.program_id(0)
    n = pid // strips
    strip = pid % strips
    r0 = strip * rows
    r1 = tl.minimum(r0 + rows, Ho)
    i1 = tl.where(strip == strips - 1, H, r1 * stride)
    return n, r0 * Wo, r1 * Wo, r0 * stride * W, i1 * W


@triton.jit
def window(p, pmask, taps, Wo, W, H, stride, padding, dilation, K: tl.constexpr, REFLECT: tl.constexpr):
    """In-plane offsets and mask, (TAPS, BLOCK_P), of the K×K neighbours of output pixels `p`."""
    iy, vy = neighbour((p // Wo)[None, :], (taps // K)[:, None], stride, padding, dilation, H, REFLECT)
    ix, vx = neighbour((p % Wo)[None, :], (taps % K)[:, None], stride, padding, dilation, W, REFLECT)
    return iy * W + ix, vy & vx & (taps < K * K)[:, None] & pmask[None, :]


@triton.jit
def readers(y, ymask, taps, W, H, Wo, Ho, stride, padding, dilation, K: tl.constexpr,
            MY: tl.constexpr, MX: tl.constexpr):
    """Output-plane offsets and mask, (TAPS, BLOCK_P), of the output pixels whose tap reads input
    pixels `y` through mirror (MY, MX) (see `mirror`; (0, 0) is the only one of zero padding)."""
    uy, ey = mirror((y // W)[None, :], H, MY)
    ux, ex = mirror((y % W)[None, :], W, MX)
    oy, vy = reader(uy, (taps // K)[:, None], stride, padding, dilation, Ho)
    ox, vx = reader(ux, (taps % K)[:, None], stride, padding, dilation, Wo)
    return oy * Wo + ox, ey & ex & vy & vx & (taps < K * K)[:, None] & ymask[None, :]


REDUCE_BLOCK = 1024


@triton.jit
def _sum_partials_kernel(part_ptr, out_ptr, row, programs, total, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """out[g, e] = Σ_i part[g, i, e] in the order i = 0, 1, … (the second pass of a reduction)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    base = (i // row) * programs * row + i % row
    acc = tl.zeros((BLOCK,), dtype=ACC)
    for s in range(programs):
        acc += tl.load(part_ptr + base + s * row, mask=mask, other=0.0).to(ACC)
    tl.store(out_ptr + i, acc.to(out_ptr.dtype.element_ty), mask=mask)


def sum_partials(partials, like):
    """Deterministic second pass: (G, P, *shape) per-program partial sums -> (G, *shape) like `like`."""
    groups, programs = partials.shape[:2]
    out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    row = partials[0, 0].numel()
    total = groups * row
    if total:
        _sum_partials_kernel[(triton.cdiv(total, REDUCE_BLOCK),)](
            partials, out, row, programs, total, BLOCK=REDUCE_BLOCK, ACC=accumulator(like.dtype))
    return out


def partials_launch(kernel, groups, programs, row, dtype):
    """The `Launch` of `sum_partials` over (groups, programs, row) partials of an output of `dtype`."""
    size = torch_accumulator(dtype).itemsize
    return Launch(kernel, (triton.cdiv(groups * row, REDUCE_BLOCK),), groups, 1, (
        Access("partials", "r", programs, row, one_row, size),
        Access("sum", "w", 1, row, one_row, dtype.itemsize)))
