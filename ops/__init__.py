"""localattn.ops — ELSA and SAN local-attention operators.

Public functions validate their arguments (clear `TypeError`/`ValueError` naming the argument),
make the inputs contiguous and call the dispatcher ops `torch.ops.localattn.*`: compiled C++ kernels
on CPU (`ops/csrc/cpu`), Triton kernels on CUDA (`ops/triton`). Tensors on a device with neither
kernel fall back to the pure-PyTorch reference (`ops/reference.py`, also the test oracle). All ops
support autograd, `torch.compile(fullgraph=True)` and float16/bfloat16/float32/float64 (compiled
kernels accumulate in float32, or float64 for float64 inputs).

Shapes and semantics: `shared/spec/elsa.md` §1 and `shared/spec/san.md` §1.
"""
import importlib.util

from .functional import aggregation, elsa, subtraction, subtraction2
from .modules import Aggregation, Subtraction, Subtraction2

__all__ = ["elsa", "aggregation", "subtraction", "subtraction2", "Aggregation", "Subtraction", "Subtraction2"]

# ------------------------------------------------------------------------------------------------
# CUDA kernels (Triton, `ops/triton`) are registered at import when triton is installed; without it
# `import localattn.ops` still works and CUDA tensors fall back to the reference.
# ------------------------------------------------------------------------------------------------
if importlib.util.find_spec("triton") is not None:
    from .triton import register_cuda_kernels

    register_cuda_kernels()
