"""localattn.ops — ELSA and SAN local-attention operators.

Public functions validate their arguments (clear `TypeError`/`ValueError` naming the argument),
make the inputs contiguous and call the dispatcher ops `torch.ops.localattn.*`: compiled C++ kernels
on CPU (`ops/csrc/cpu`), Triton kernels on CUDA (`ops/triton`). Tensors on a device with neither
kernel fall back to the pure-PyTorch reference (`ops/reference.py`, also the test oracle). All ops
support autograd, `torch.compile(fullgraph=True)` and float16/bfloat16/float32/float64 (compiled
kernels accumulate in float32, or float64 for float64 inputs).

Shapes and semantics: `shared/spec/elsa.md` §1 and `shared/spec/san.md` §1.

Deployment: the kernels live in a Python-free library, `library_path()`; a process with only torch runs
saved `.pt2` / TorchScript files after `torch.ops.load_library(library_path())`, and `torch.onnx.export`
translates the ops into standard ONNX operators (`ops/onnx.py`).
"""
import importlib.util

from . import onnx  # noqa: F401  (aten decompositions of the ops: ONNX export out of the box)
from ._loader import library_path
from .functional import aggregation, elsa, elsa_attention, san_pairwise, san_patchwise, subtraction, subtraction2
from .modules import Aggregation, Subtraction, Subtraction2

__all__ = ["elsa", "elsa_attention", "aggregation", "subtraction", "subtraction2", "san_pairwise", "san_patchwise",
           "Aggregation", "Subtraction", "Subtraction2", "library_path"]

# ------------------------------------------------------------------------------------------------
# CUDA kernels (Triton, `ops/triton`) are registered at import when triton is installed; without it
# `import localattn.ops` still works and CUDA tensors fall back to the reference.
# ------------------------------------------------------------------------------------------------
if importlib.util.find_spec("triton") is not None:
    from .triton import register_cuda_kernels

    register_cuda_kernels()
