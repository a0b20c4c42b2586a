"""Parameters and FLOPs of any model, including localattn's local-attention ops.

Counting runs one forward under `torch.utils.flop_counter.FlopCounterMode` and reports
multiply-accumulates (MACs; 1 MAC = 2 FLOPs of the counter) in two conventions:

* ``macs`` — conv / linear / matmul / attention MACs (torch's formulas, as fvcore and the ELSA
  estimates) plus our ops by formula: ``elsa``, ``elsa_attention`` and ``aggregation`` = output numel · K²,
  ``subtraction``/``subtraction2`` = output numel (backward ops: twice their forward).
* ``complexity`` — additionally the rules of SAN's ``util/complexity.py`` (ptflops style), which
  produced the SAN paper table: conv bias = output numel, BatchNorm = 2 · numel, ReLU = numel,
  max / average pooling = input numel.

Our ops are counted at the public API (`localattn.ops.<op>`, executed with the counter paused), so
the count is the same whether the compiled kernels or the unfold reference run; direct calls of the
dispatcher ops `torch.ops.localattn.*` (and their backward ops) are counted by the same formulas, the
fused ``san_pairwise`` / ``san_patchwise`` as the unfused SAM graphs they replace (``san_pairwise_macs``,
``san_patchwise_macs``).

`register_jit_handles()` (run by `import localattn.mm`, i.e. by our configs' `custom_imports`) gives
mmengine's `FlopAnalyzer` / `get_model_complexity_info` (mmdet/mmseg ``get_flops.py``) and fvcore the same
formulas for the traced ops ``localattn::*``, plus ``aten::baddbmm`` (a bias-added bmm, SAN's 1x1 convs),
which neither counts by default. Their total (1 multiply-add = 1 flop) is then our ``macs`` plus their
own norm/pool terms (``batch_norm``: 2·numel in eval, ``layer_norm``: 5·numel, ``adaptive_avg_pool2d``:
numel), which ``macs`` leaves out.
"""
import contextlib
import importlib
import math

import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils.flop_counter import FlopCounterMode

from localattn import ops

aten = torch.ops.aten

# MACs of our ops as a function of the output shape and the kernel size.
LOCAL_OP_MACS = {
    "elsa": lambda out_shape, kernel_size: math.prod(out_shape) * kernel_size ** 2,
    "elsa_attention": lambda out_shape, kernel_size: math.prod(out_shape) * kernel_size ** 2,
    "aggregation": lambda out_shape, kernel_size: math.prod(out_shape) * kernel_size ** 2,
    "subtraction": lambda out_shape, kernel_size: math.prod(out_shape),
    "subtraction2": lambda out_shape, kernel_size: math.prod(out_shape),
}
# Position of `kernel_size` in the public signatures of `localattn.ops`.
_KERNEL_ARG = {"elsa": 4, "elsa_attention": 4, "aggregation": 2, "subtraction": 1, "subtraction2": 2}


def san_pairwise_macs(x1_shape, value_shape, weight2_shape, weight5_shape, kernel_size):
    """MACs of the unfused SAM graph that `san_pairwise` computes (BatchNorms folded, so none counted):
    subtraction2 of x1/x2 and subtraction of the one position map (output numel), conv_w.2 and conv_w.5
    (1x1 convs over the N·K²·L relation pixels) and the aggregation (output numel · K²)."""
    n, rel, h, w = x1_shape
    hidden, weight_planes = weight2_shape[0], weight5_shape[0]
    per_pixel = n * (rel + hidden * (rel + 2) + weight_planes * hidden + value_shape[1]) + 2
    return kernel_size ** 2 * h * w * per_pixel


def san_patchwise_macs(hidden_shape, value_shape, weight5_shape, kernel_size):
    """MACs of the unfused graph that `san_patchwise` computes: conv_w.5 (a 1x1 conv, M -> C_w·K², over the
    N·L pixels) and the aggregation (output numel · K²)."""
    n, _, h, w = hidden_shape
    return n * h * w * (weight5_shape[0] * weight5_shape[1] + value_shape[1] * kernel_size ** 2)


# MACs of the dispatcher op `torch.ops.localattn.<name>` from its arguments (tensors as shapes) and its
# output shape. A `<name>_backward` op (grad_out, then the forward's arguments, except subtraction2's
# (grad_out, H, W, kernel_size, ...)) counts twice its forward.
DISPATCH_MACS = {
    "elsa": lambda args, out: LOCAL_OP_MACS["elsa"](out, args[4]),
    "elsa_attention": lambda args, out: LOCAL_OP_MACS["elsa_attention"](out, args[4]),
    "aggregation": lambda args, out: LOCAL_OP_MACS["aggregation"](out, args[2]),
    "subtraction2": lambda args, out: LOCAL_OP_MACS["subtraction2"](out, args[2]),
    "san_pairwise": lambda args, out: san_pairwise_macs(args[0], args[3], args[6], args[8], args[10]),
    "san_patchwise": lambda args, out: san_patchwise_macs(args[0], args[1], args[2], args[4]),
}

_BATCH_NORM_OPS = ("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                   "_batch_norm_with_update", "_batch_norm_no_update", "cudnn_batch_norm")
_ACTIVATION_OPS = ("relu", "relu_")
_POOL_OPS = ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "_adaptive_avg_pool2d",
             "adaptive_max_pool2d")


def count_params(model):
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def _raw(fn):
    """Mark a formula as taking the real arguments (FlopCounterMode then skips its shape wrapper)."""
    fn._get_raw = True
    return fn


def _elementwise(factor):
    """Formula: `factor` MACs per element of the op's first (input) tensor (in counter FLOPs: 2·factor)."""
    return _raw(lambda *args, out_val=None, **kwargs: 2 * factor * args[0].numel())


def _shape_or_value(arg):
    return tuple(arg.shape) if isinstance(arg, torch.Tensor) else arg


def _local_dispatch_formulas():
    """Formulas for the registered `torch.ops.localattn` ops and their `*_backward` ops."""
    formulas = {}
    namespace = torch.ops.localattn
    for name, macs in DISPATCH_MACS.items():
        if hasattr(namespace, name):
            formulas[getattr(namespace, name)] = _raw(lambda *args, out_val=None, macs=macs, **kw: 2 * macs(
                [_shape_or_value(a) for a in args], out_val.shape))
        if hasattr(namespace, f"{name}_backward"):
            formulas[getattr(namespace, f"{name}_backward")] = _raw(lambda *args, out_val=None, macs=macs, **kw: (
                4 * macs([_shape_or_value(a) for a in args[1:]], args[0].shape)))
    return formulas


def _jit_arg(value):
    """A node input/output of a traced graph: a tensor's shape, else its constant value (None if not constant)."""
    if isinstance(value.type(), torch._C.TensorType):
        return tuple(value.type().sizes())
    return value.toIValue()


def jit_flop_handles():
    """fvcore / mmengine jit op handles (name -> handle(inputs, outputs) -> MACs) for `localattn::<op>`
    (`DISPATCH_MACS`) and `aten::baddbmm` (batch1 numel · columns of batch2, like their `aten::bmm`)."""
    def handle(macs):
        return lambda inputs, outputs: macs([_jit_arg(v) for v in inputs], _jit_arg(outputs[0]))

    handles = {f"localattn::{name}": handle(macs) for name, macs in DISPATCH_MACS.items()}
    handles["aten::baddbmm"] = handle(lambda args, out: math.prod(args[1]) * args[2][-1])
    return handles


# default handle tables read by each analyzer's constructor (FlopAnalyzer / FlopCountAnalysis)
_JIT_TABLES = (("mmengine.analysis.complexity_analysis", "_DEFAULT_SUPPORTED_FLOP_OPS"),
               ("fvcore.nn.flop_count", "_DEFAULT_SUPPORTED_OPS"))


def register_jit_handles():
    """Add `jit_flop_handles()` to the default tables of mmengine's `FlopAnalyzer` and of fvcore's
    `FlopCountAnalysis` where installed (handles already there are kept), so every analyzer built
    afterwards, e.g. by mmdet/mmseg's unmodified `get_flops.py`, counts our ops. Idempotent."""
    handles = jit_flop_handles()
    for module, table in _JIT_TABLES:
        try:
            defaults = getattr(importlib.import_module(module), table)
        except (ImportError, AttributeError):
            continue
        for name, handle in handles.items():
            defaults.setdefault(name, handle)


class FlopCount:
    """One counted forward: `params`, `macs`, `complexity_macs` and the per-op breakdown `by_op()`."""

    def __init__(self):
        self.conv_bias_flops = 0
        self.extra_ops = set()
        self.mode = FlopCounterMode(display=False, custom_mapping=self._formulas())

    def _formulas(self):
        formulas = dict(_local_dispatch_formulas())
        for names, formula in ((_BATCH_NORM_OPS, _elementwise(2)), (_ACTIVATION_OPS, _elementwise(1)),
                               (_POOL_OPS, _elementwise(1))):
            for name in names:
                if hasattr(aten, name):
                    formulas[getattr(aten, name)] = formula
                    self.extra_ops.add(getattr(aten, name))
        return formulas

    def _count_conv_bias(self, module, inputs, output):
        """complexity.py's conv bias rule, per module (whether the conv runs as a convolution or a matmul)."""
        if module.bias is not None:
            self.conv_bias_flops += 2 * output.numel()

    def _add(self, name, flops):
        for parent in set(self.mode.mod_tracker.parents):
            self.mode.flop_counts[parent][f"localattn.{name}"] += flops

    @contextlib.contextmanager
    def counting_local_ops(self):
        """Patch `localattn.ops.<op>`: add the formula, run the op with the counter paused."""
        originals = {name: getattr(ops, name) for name in LOCAL_OP_MACS}

        active = []  # a public op implemented through another one is counted once

        def counted(name, fn):
            def wrapper(*args, **kwargs):
                if active:
                    return fn(*args, **kwargs)
                active.append(name)
                try:
                    with _disable_current_modes():
                        out = fn(*args, **kwargs)
                finally:
                    active.pop()
                position = _KERNEL_ARG[name]
                kernel_size = args[position] if len(args) > position else kwargs["kernel_size"]
                self._add(name, 2 * LOCAL_OP_MACS[name](out.shape, kernel_size))
                return out
            return wrapper

        try:
            for name, fn in originals.items():
                setattr(ops, name, counted(name, fn))
            yield
        finally:
            for name, fn in originals.items():
                setattr(ops, name, fn)

    def run(self, model, inputs):
        hooks = [m.register_forward_hook(self._count_conv_bias) for m in model.modules()
                 if isinstance(m, torch.nn.modules.conv._ConvNd)]
        try:
            # autograd on: layers with inference-only rewrites (localattn.layers.san) run their published graph
            with self.counting_local_ops(), self.mode, torch.enable_grad():
                model(inputs)
        finally:
            for hook in hooks:
                hook.remove()
        self.params = count_params(model)
        total = self.mode.get_total_flops()
        extras = sum(v for op, v in self.mode.get_flop_counts()["Global"].items() if op in self.extra_ops)
        self.macs = (total - extras) // 2
        self.complexity_macs = (total + self.conv_bias_flops) // 2
        return self

    def by_op(self):
        """MACs per counted op (our ops as `localattn.<op>`), largest first (conv-bias adds not included)."""
        counts = self.mode.get_flop_counts()["Global"]
        return dict(sorted(((str(op), v // 2) for op, v in counts.items()), key=lambda kv: -kv[1]))


def count_flops(model, input_size=(3, 224, 224), batch_size=1, device=None):
    """Count `model` (switched to eval) on a random batch; returns a `FlopCount`.

    `device='meta'` moves the model to the meta device first: shapes only, no arithmetic (fast, and
    the counts are identical); otherwise the model's own device is used.
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {tuple(input_size)}")
    if device is not None:
        model.to(device)
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return FlopCount().run(model, torch.randn(batch_size, *input_size, device=device))
