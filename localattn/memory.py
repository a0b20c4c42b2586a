"""CPU memory reuse for training and benchmarks on CPU.

glibc's malloc serves every block above its mmap threshold (at most 32 MB) with a fresh `mmap` and gives it back
with `munmap` when freed, so each such tensor page-faults all its pages again when first written: SAN's K²-sized
training temporaries (40–90 MB each at batch 8) cost ≈ 0.5 s of page faults per SAN10 train step, ResNet-26's
train step almost none; inference of both gains too, from freed memory no longer trimmed off the heap's top
(`benchmarks/models.py --reuse-freed-memory`). Keeping freed memory in the heap for reuse is
what PyTorch's CUDA caching allocator does on the GPU.
"""
import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>
KEEP_FREE_BYTES = 2 ** 31 - 1  # free memory at the heap's top kept up to this size (mallopt takes an int)


def reuse_freed_cpu_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse: no `mmap` per large block, no trimming of the heap. The
    process then keeps its peak heap size. Returns False (and changes nothing) where the C library is not
    glibc. Used by the CPU trainers (cls, mmdet / mmseg tools); for your own CPU training loop call it once at
    start-up, or set `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647`."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES))
