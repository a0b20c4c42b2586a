"""Every Triton kernel compiles for real GPUs (CUDA sm_80 and sm_90 cubins), with no GPU present.

The interpreter test (test_triton.py) checks the numbers; this one checks that the same kernels get
through Triton's whole compiler (TTIR → PTX → ptxas) for every dtype and every constexpr branch, which
the interpreter never exercises.
"""
import importlib

import pytest
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from localattn.ops.triton.common import accumulator, torch_accumulator

MODULES = ("common", "elsa", "elsa_attention", "aggregation", "subtraction", "san_pairwise", "san_patchwise")
POINTER_TYPES = {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16"}  # fp16 compiles like bf16
# every other constexpr but ACC is a bool branch flag
FIXED = {"K": 3, "TAPS": 16, "BLOCK_P": 32, "CHANNELS": 16, "MIRRORS": 3, "BLOCK": 1024, "FEATURES": 16,
         "GROUP": 16}
SCRATCH_POINTERS = {"part_ptr", "pmul_ptr", "padd_ptr", "lse_ptr"}  # fp32/fp64 scratch, whatever the tensors' dtype
TARGETS = {torch.float32: (80, 90), torch.float64: (80,), torch.bfloat16: (80,)}


def kernels():
    """(module name, kernel) for every `*_kernel` JIT function of the Triton modules."""
    found = []
    for name in MODULES:
        module = importlib.import_module(f"localattn.ops.triton.{name}")
        found += [(name, getattr(module, attr)) for attr in sorted(vars(module))
                  if attr.endswith("_kernel") and isinstance(getattr(module, attr), triton.runtime.JITFunction)]
    return found


def variants(kernel, dtype):
    """Constexpr assignments to compile: every branch off and every branch on (fp32 only), on otherwise."""
    branches = [p.name for p in kernel.params if p.is_constexpr and p.name not in FIXED and p.name != "ACC"]
    flags = [True, False] if dtype == torch.float32 else [True]
    fixed = {name: value for name, value in FIXED.items() if name in kernel.arg_names}
    return [dict(fixed, ACC=accumulator(dtype), **{name: flag for name in branches}) for flag in flags]


def signature(kernel, dtype):
    """Triton signature: `*_ptr` arguments are pointers to `dtype` (scratch: its accumulator), the rest int32."""
    def kind(name):
        if name in SCRATCH_POINTERS:
            return f"*{POINTER_TYPES[torch_accumulator(dtype)]}"
        return f"*{POINTER_TYPES[dtype]}" if name.endswith("_ptr") else "i32"

    return {p.name: "constexpr" if p.is_constexpr else kind(p.name) for p in kernel.params}


@pytest.mark.parametrize("dtype", list(POINTER_TYPES), ids=str)
@pytest.mark.parametrize("module,kernel", kernels(), ids=lambda v: getattr(v, "__name__", v))
def test_kernel_compiles_to_cubin(module, kernel, dtype):
    for arch in TARGETS[dtype]:
        for constexprs in variants(kernel, dtype):
            compiled = triton.compile(ASTSource(kernel, signature(kernel, dtype), constexprs),
                                      target=GPUTarget("cuda", arch, 32))
            assert compiled.asm["cubin"], (module, kernel.__name__, arch, constexprs)
