"""localattn.memory: with freed CPU memory reused, glibc serves a large tensor from its heap (reusable once freed)
instead of a fresh mmap (returned to the OS on free, so every page faults again on the next allocation)."""
import subprocess
import sys
import textwrap

# Bytes glibc holds in mmapped blocks while a 96 MB tensor is alive (mallinfo2().hblkhd), in a fresh process (the
# setting is process-wide), with and without the call.
MMAPPED_BYTES = textwrap.dedent("""
    import ctypes, sys, torch
    from localattn.memory import reuse_freed_cpu_memory
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    if sys.argv[1] == "reuse":
        assert reuse_freed_cpu_memory()
    block = torch.empty(24 << 20).fill_(1.0)
    print(mallinfo2().hblkhd)
""")


def mmapped_bytes(mode):
    out = subprocess.run([sys.executable, "-c", MMAPPED_BYTES, mode], capture_output=True, text=True, timeout=120,
                         check=True)
    return int(out.stdout)


def test_large_tensors_come_from_the_reusable_heap():
    size = 96 << 20
    assert mmapped_bytes("default") >= size  # glibc's default: a block this large is an mmap of its own
    assert mmapped_bytes("reuse") < size
