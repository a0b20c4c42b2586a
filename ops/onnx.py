"""ONNX export of `torch.ops.localattn.*`: each forward op decomposes into standard aten ops.

`torch.onnx.export(model, x, dynamo=True)` captures the model with `torch.export` (our ops stay single
nodes, shaped by their fake kernels), then decomposes every op that has no ONNX translation through
`torch._decomp.decomposition_table` before translating aten to ONNX. Registering the pure-PyTorch
definitions of `ops/reference.py` there (done when `localattn.ops` is imported) is therefore all the
exporter needs: the ONNX graph is made of standard operators (Pad, Gather, Mul, ReduceSum, ...) that
plain onnxruntime runs, with dynamic batch and spatial axes, and no `custom_translation_table` has to be
passed. The same table also serves `ExportedProgram.run_decompositions(localattn.ops.onnx.DECOMPOSITIONS)`
for any backend that should not see our ops.
"""
from torch._decomp import register_decomposition

from . import reference
from ._library import ops


def _pad_mode(reflect):
    return "reflect" if reflect else "zero"


def _san_window(fn):
    """A SAN op of the schema (..., kernel_size, stride, padding, dilation, bool reflect) as its reference."""
    return lambda *args: fn(*args[:-1], _pad_mode(args[-1]))


# Dispatcher schema -> reference: ELSA ops share the argument order; SAN ops pass pad_mode as a bool.
_REFERENCES = {
    "elsa": reference.elsa,
    "elsa_attention": reference.elsa_attention,
    "aggregation": _san_window(reference.aggregation),
    "subtraction2": _san_window(reference.subtraction2),
    "san_pairwise": reference.san_pairwise,
    "san_patchwise": reference.san_patchwise,
}
DECOMPOSITIONS = {getattr(ops, name).default: fn for name, fn in _REFERENCES.items() if hasattr(ops, name)}
for _op, _fn in DECOMPOSITIONS.items():
    register_decomposition(_op)(_fn)
