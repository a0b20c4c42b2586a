"""localattn.ops — ELSA and SAN local-attention operators.

PROVISIONAL FRONT (skeleton): routes every call to the pure-PyTorch reference. The ops work
replaces the bodies with the dispatcher-registered compiled kernels; the signatures below are the
public API and do not change.
"""
from . import reference

__all__ = ["elsa", "aggregation", "subtraction", "subtraction2"]


def elsa(features, ghost_mul, ghost_add, h_attn, kernel_size, dilation=1, stride=1):
    """ELSA aggregation. features (N,C,H,W), ghost_mul/ghost_add (N,C,K,K) or None,
    h_attn (N,K²,H//s,W//s) -> (N,C,H//s,W//s)."""
    return reference.elsa(features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride)


def aggregation(input, weight, kernel_size, stride=1, padding=0, dilation=1, pad_mode="reflect"):
    """SAN aggregation. input (N,C,H,W), weight (N,C_w,K²,H_o·W_o) -> (N,C,H_o,W_o)."""
    return reference.aggregation(input, weight, kernel_size, stride, padding, dilation, pad_mode)


def subtraction(input, kernel_size, stride=1, padding=0, dilation=1, pad_mode="reflect"):
    """SAN subtraction. input (N,C,H,W) -> (N,C,K²,H_o·W_o)."""
    return reference.subtraction(input, kernel_size, stride, padding, dilation, pad_mode)


def subtraction2(input1, input2, kernel_size, stride=1, padding=0, dilation=1, pad_mode="reflect"):
    """SAN subtraction2. input1/input2 (N,C,H,W) -> (N,C,K²,H_o·W_o)."""
    return reference.subtraction2(input1, input2, kernel_size, stride, padding, dilation, pad_mode)
