"""Dispatcher glue in Python for `torch.ops.localattn.*`: fake kernels and autograd formulas.

The schemas and CPU kernels are registered in C++ (`ops/csrc`), in the library `_ops.so` loaded here. Fake
kernels (for FakeTensor / torch.compile / meta) mirror the C++ output shapes and contiguous strides;
autograd of each forward op calls its `*_backward` op. Absent ghost tensors come back from
`elsa_backward` as empty tensors and are returned to autograd as None.
"""
import torch

from ._loader import library_path
from ._validate import san_output_size
from . import _san_fused

torch.ops.load_library(library_path())  # schemas + CPU kernels (Python-free, ops/csrc)

ops = torch.ops.localattn


@torch.compiler.assume_constant_result
def has_kernel(op_name, device_type):
    """True when `localattn::op_name` has a kernel registered for tensors on `device_type`."""
    key = torch._C._dispatch_key_for_device(device_type)
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"localattn::{op_name}", key)


def _new(like, shape):
    return like.new_empty(tuple(shape))  # contiguous, like the C++ kernels' outputs


# ---------------------------------------------------------------------------------- fake kernels
@torch.library.register_fake("localattn::elsa")
def _elsa_fake(features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride):
    n, c, h, w = features.shape
    return _new(features, (n, c, h // stride, w // stride))


@torch.library.register_fake("localattn::elsa_backward")
def _elsa_backward_fake(grad_out, features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride):
    def ghost(g):
        return _new(g, g.shape) if g is not None else _new(features, (0,))

    return _new(features, features.shape), ghost(ghost_mul), ghost(ghost_add), _new(h_attn, h_attn.shape)


@torch.library.register_fake("localattn::elsa_attention")
def _elsa_attention_fake(logits, values, ghost_mul, ghost_add, kernel_size, dilation, stride):
    b, h, w, c = values.shape
    return _new(values, (b, h // stride, w // stride, c))


@torch.library.register_fake("localattn::elsa_attention_backward")
def _elsa_attention_backward_fake(grad_out, logits, values, ghost_mul, ghost_add, kernel_size, dilation, stride):
    def ghost(g):
        return _new(g, g.shape) if g is not None else _new(values, (0,))

    return _new(logits, logits.shape), _new(values, values.shape), ghost(ghost_mul), ghost(ghost_add)


@torch.library.register_fake("localattn::aggregation")
def _aggregation_fake(input, weight, kernel_size, stride, padding, dilation, reflect):
    n, c, h, w = input.shape
    ho, wo = (san_output_size(x, kernel_size, stride, padding, dilation) for x in (h, w))
    return _new(input, (n, c, ho, wo))


@torch.library.register_fake("localattn::aggregation_backward")
def _aggregation_backward_fake(grad_out, input, weight, kernel_size, stride, padding, dilation, reflect):
    return _new(input, input.shape), _new(weight, weight.shape)


@torch.library.register_fake("localattn::subtraction2")
def _subtraction2_fake(input1, input2, kernel_size, stride, padding, dilation, reflect):
    n, c, h, w = input1.shape
    ho, wo = (san_output_size(x, kernel_size, stride, padding, dilation) for x in (h, w))
    return _new(input1, (n, c, kernel_size * kernel_size, ho * wo))


@torch.library.register_fake("localattn::subtraction2_backward")
def _subtraction2_backward_fake(grad_out, height, width, kernel_size, stride, padding, dilation, reflect):
    n, c = grad_out.shape[:2]
    return _new(grad_out, (n, c, height, width)), _new(grad_out, (n, c, height, width))


# -------------------------------------------------------------------------------------- autograd
def _elsa_setup(ctx, inputs, output):
    features, ghost_mul, ghost_add, h_attn, *window = inputs
    ctx.save_for_backward(features, ghost_mul, ghost_add, h_attn)
    ctx.window = window


def _elsa_backward(ctx, grad):
    features, ghost_mul, ghost_add, h_attn = ctx.saved_tensors
    gx, gmul, gadd, gattn = ops.elsa_backward(grad, features, ghost_mul, ghost_add, h_attn, *ctx.window)
    return (gx, gmul if ghost_mul is not None else None, gadd if ghost_add is not None else None,
            gattn, None, None, None)


def _elsa_attention_setup(ctx, inputs, output):
    logits, values, ghost_mul, ghost_add, *window = inputs
    ctx.save_for_backward(logits, values, ghost_mul, ghost_add)
    ctx.window = window


def _elsa_attention_backward(ctx, grad):
    logits, values, ghost_mul, ghost_add = ctx.saved_tensors
    gl, gv, gmul, gadd = ops.elsa_attention_backward(grad, logits, values, ghost_mul, ghost_add, *ctx.window)
    return (gl, gv, gmul if ghost_mul is not None else None, gadd if ghost_add is not None else None,
            None, None, None)


def _aggregation_setup(ctx, inputs, output):
    input, weight, *window = inputs
    ctx.save_for_backward(input, weight)
    ctx.window = window


def _aggregation_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    gx, gw = ops.aggregation_backward(grad, input, weight, *ctx.window)
    return gx, gw, None, None, None, None, None


def _subtraction2_setup(ctx, inputs, output):
    input1, _, *window = inputs
    ctx.size = tuple(input1.shape[-2:])
    ctx.window = window


def _subtraction2_backward(ctx, grad):
    g1, g2 = ops.subtraction2_backward(grad, *ctx.size, *ctx.window)
    return g1, g2, None, None, None, None, None


@torch.library.register_fake("localattn::san_pairwise")
def _san_pairwise_fake(x1, x2, position, value, scale0, shift0, weight2, shift2, weight5, bias5, kernel_size,
                       dilation):
    return _new(value, value.shape)


@torch.library.register_fake("localattn::san_patchwise")
def _san_patchwise_fake(hidden, value, weight5, bias5, kernel_size, dilation):
    return _new(value, value.shape)


torch.library.register_autograd("localattn::san_pairwise", _san_fused.pairwise_backward,
                                setup_context=_san_fused.setup_context)
torch.library.register_autograd("localattn::san_patchwise", _san_fused.patchwise_backward,
                                setup_context=_san_fused.setup_context)
torch.library.register_autograd("localattn::elsa", _elsa_backward, setup_context=_elsa_setup)
torch.library.register_autograd("localattn::elsa_attention", _elsa_attention_backward,
                                setup_context=_elsa_attention_setup)
torch.library.register_autograd("localattn::aggregation", _aggregation_backward,
                                setup_context=_aggregation_setup)
torch.library.register_autograd("localattn::subtraction2", _subtraction2_backward,
                                setup_context=_subtraction2_setup)
