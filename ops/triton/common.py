"""Pieces shared by the Triton kernels: neighbour-index arithmetic, accumulator dtype, launch sizes.

Every kernel works on one axis-separable neighbourhood: output coordinate `o` and tap `t` read the
padded input coordinate `u = o*stride - padding + t*dilation`. `neighbour` maps `u` into the image
(zero padding: flagged out of range; reflect padding: mirrored once) and `reader` inverts it (without
reflection) for the gather-form backward kernels; reflect padding is undone by `reflect.py`.
"""
import torch
import triton
import triton.language as tl

MAX_BLOCK_PIXELS = 128
MAX_BLOCK_CHANNELS = 16


@triton.jit
def neighbour(o, tap, stride, padding, dilation, size, REFLECT: tl.constexpr):
    """Input coordinate read by output coordinate `o` at `tap` along one axis; (coord, in_image)."""
    u = o * stride - padding + tap * dilation
    if REFLECT:
        u = tl.where(u < 0, -u, u)
        u = tl.where(u >= size, 2 * (size - 1) - u, u)
    return u, (u >= 0) & (u < size)


@triton.jit
def reader(y, tap, stride, padding, dilation, out_size):
    """Output coordinate whose `tap` reads input coordinate `y` along one axis (no reflection); (o, exists)."""
    t = y + padding - tap * dilation
    o = t // stride
    return o, (t >= 0) & (t % stride == 0) & (o < out_size)


@triton.jit
def tile(num_pixels, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """(n, channel offsets, pixel offsets) of a program of a `tile_grid` launch (int64)."""
    pid = tl.program_id(0).to(tl.int64)
    pixel_blocks = tl.cdiv(num_pixels, BLOCK_P)
    n = pid // pixel_blocks
    p = (pid % pixel_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    return n, c, p


def tile_grid(batch, channels, pixels):
    """Launch grid and blocks of a channels × pixels tiling: axis 0 = (n, pixel block), axis 1 = channel block."""
    block_c = block(channels, MAX_BLOCK_CHANNELS)
    block_p = block(pixels, MAX_BLOCK_PIXELS)
    grid = (batch * triton.cdiv(pixels, block_p), triton.cdiv(channels, block_c))
    return grid, dict(BLOCK_C=block_c, BLOCK_P=block_p)


def accumulator(dtype):
    """Triton accumulation dtype for tensors of `dtype`: fp64 for fp64, fp32 otherwise."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def block(size, cap):
    """Power-of-two block length covering `size` items, at most `cap`."""
    return min(cap, triton.next_power_of_2(max(size, 1)))


def torch_accumulator(dtype):
    """torch dtype of `accumulator(dtype)`, for scratch buffers."""
    return torch.float64 if dtype == torch.float64 else torch.float32
