"""Triton GPU kernels of the localattn ops, registered as the CUDA implementations of
`torch.ops.localattn.*` (the schemas are defined in C++, `ops/csrc/ops.cpp`).

Each launcher takes exactly the arguments of its schema and also runs on CPU tensors under Triton's
interpreter (`TRITON_INTERPRET=1` set before this package is imported), which is how they are tested.
"""
import torch

from . import aggregation, elsa, elsa_attention, san_pairwise, san_patchwise, subtraction

__all__ = ["register_cuda_kernels", "KERNELS"]

KERNELS = {
    "elsa": elsa.elsa,
    "elsa_backward": elsa.elsa_backward,
    "elsa_attention": elsa_attention.elsa_attention,
    "elsa_attention_backward": elsa_attention.elsa_attention_backward,
    "aggregation": aggregation.aggregation,
    "aggregation_backward": aggregation.aggregation_backward,
    "subtraction2": subtraction.subtraction2,
    "subtraction2_backward": subtraction.subtraction2_backward,
    "san_pairwise": san_pairwise.san_pairwise,  # backward: ops/_san_fused.py, with the unfused ops
    "san_patchwise": san_patchwise.san_patchwise,  # backward: ops/_san_fused.py, with the unfused ops
}
_registered = False


def register_cuda_kernels():
    """Register every launcher of `KERNELS` as the CUDA kernel of `localattn::<name>` (idempotent)."""
    global _registered
    if _registered:
        return
    for name, launcher in KERNELS.items():
        torch.library.register_kernel(f"localattn::{name}", "cuda", launcher)
    _registered = True
