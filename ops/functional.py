"""The public functions of `localattn.ops` (re-exported there): argument checks, contiguous inputs,
then the dispatcher op, or the pure-PyTorch reference on a device with no kernel. Under TorchScript
(`torch.jit.script` of a model) they call the dispatcher op directly."""
from typing import Optional

import torch
from torch import Tensor

from . import _validate, reference
from ._library import has_kernel, ops


def _use_reference(device, op_name):
    return device.type != "cpu" and not has_kernel(op_name, device.type)


def elsa(features: Tensor, ghost_mul: Optional[Tensor], ghost_add: Optional[Tensor], h_attn: Tensor, kernel_size: int,
         dilation: int = 1, stride: int = 1):
    """ELSA aggregation (spec elsa.md §1.2), zero borders, cross-correlation orientation:

        out[n,c,i,j] = Σ_k (M[n,c,k]·A[n,k,i,j] + D[n,c,k]) · X[n,c, i·s + (ky−r)·d, j·s + (kx−r)·d]

    features (N, C, H, W) = X; ghost_mul = M and ghost_add = D of shape (N, C, K, K), each may be
    None (all ones / all zeros, nothing materialised); h_attn (N, K², H//stride, W//stride) = A.
    kernel_size K odd; dilation d, stride s >= 1. Returns (N, C, H//stride, W//stride).
    """
    if torch.jit.is_scripting():  # TorchScript: the dispatcher op itself (checks and reference are Python)
        return torch.ops.localattn.elsa(features.contiguous(), ghost_mul, ghost_add, h_attn.contiguous(), kernel_size,
                                        dilation, stride)
    op = "localattn.ops.elsa"
    k = _validate.kernel_size(op, kernel_size)
    d = _validate.integer(op, "dilation", dilation, 1)
    s = _validate.integer(op, "stride", stride, 1)
    like = ("features", _validate.tensor(op, "features", features, ("N", "C", "H", "W")))
    n, c, h, w = features.shape
    attn_layout = ("N", "K*K", "H//stride", "W//stride")
    _validate.tensor(op, "h_attn", h_attn, attn_layout, like)
    _validate.shape(op, "h_attn", h_attn, attn_layout, (n, k * k, h // s, w // s))
    for name, ghost in (("ghost_mul", ghost_mul), ("ghost_add", ghost_add)):
        if ghost is not None:
            _validate.tensor(op, name, ghost, ("N", "C", "K", "K"), like)
            _validate.shape(op, name, ghost, ("N", "C", "K", "K"), (n, c, k, k))
    features, h_attn = features.contiguous(), h_attn.contiguous()
    ghost_mul = ghost_mul.contiguous() if ghost_mul is not None else None
    ghost_add = ghost_add.contiguous() if ghost_add is not None else None
    if _use_reference(features.device, "elsa"):
        if features.numel() == 0 or h_attn.numel() == 0:
            return features.new_zeros((n, c, h // s, w // s))
        return reference.elsa(features, ghost_mul, ghost_add, h_attn, k, d, s)
    return ops.elsa(features, ghost_mul, ghost_add, h_attn, k, d, s)


def elsa_attention(logits: Tensor, values: Tensor, ghost_mul: Optional[Tensor], ghost_add: Optional[Tensor],
                   kernel_size: int, dilation: int = 1, stride: int = 1):
    """Fused ELSA attention on channels-last tensors: softmax over the K² taps, ghost filter, aggregation.

        A[b,i,j,g,:] = softmax(logits[b, i, j, g·K² : (g+1)·K²])
        out[b,i,j,g·C+c] = Σ_k (M[g·C+c,k]·A[b,i,j,g,k] + D[g·C+c,k]) · X[b, i·s + (ky−r)·d, j·s + (kx−r)·d, g·C+c]

    logits (B, H//stride, W//stride, G·K²) pre-softmax, head-major; values X (B, H, W, G·C), head-major;
    ghost_mul M / ghost_add D (G·C, K, K) or None (ones / zeros), shared by the batch. Zero borders.
    Returns (B, H//stride, W//stride, G·C). Channel-sliced views (last stride 1) are read in place.
    Under autocast every input runs in the autocast dtype (float32 accumulation).
    Definition: `localattn.ops.reference.elsa_attention`.
    """
    if torch.jit.is_scripting():  # TorchScript: the dispatcher op itself
        return torch.ops.localattn.elsa_attention(logits, values, ghost_mul, ghost_add, kernel_size, dilation, stride)
    op = "localattn.ops.elsa_attention"
    k = _validate.kernel_size(op, kernel_size)
    d = _validate.integer(op, "dilation", dilation, 1)
    s = _validate.integer(op, "stride", stride, 1)
    like = ("values", _validate.tensor(op, "values", values, ("B", "H", "W", "G*C")))
    device = values.device.type  # under autocast the op's autocast rule casts to one dtype
    mixed = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
    logit_layout = ("B", "H//stride", "W//stride", "G*K*K")
    _validate.tensor(op, "logits", logits, logit_layout, like, same_dtype=not mixed)
    b, h, w, cv = values.shape
    gk = logits.shape[-1]
    if gk == 0 or gk % (k * k) != 0:
        raise ValueError(f"{op}: logits must have G*K*K channels (a multiple of K*K = {k * k}), got {gk}")
    if cv % (gk // (k * k)) != 0:
        raise ValueError(f"{op}: values channels {cv} must be divisible by the number of heads "
                         f"G = {gk // (k * k)} (logits channels / K*K)")
    _validate.shape(op, "logits", logits, logit_layout, (b, h // s, w // s, gk))
    for name, ghost in (("ghost_mul", ghost_mul), ("ghost_add", ghost_add)):
        if ghost is not None:
            _validate.tensor(op, name, ghost, ("G*C", "K", "K"), like, same_dtype=not mixed)
            _validate.shape(op, name, ghost, ("G*C", "K", "K"), (cv, k, k))
    if _use_reference(values.device, "elsa_attention"):
        return reference.elsa_attention(logits, values, ghost_mul, ghost_add, k, d, s)
    return ops.elsa_attention(logits, values, ghost_mul, ghost_add, k, d, s)


def aggregation(input: Tensor, weight: Tensor, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                pad_mode: str = "reflect"):
    """SAN aggregation (spec san.md §1.2):

        Y[n,c,h,w] = Σ_t W[n, c mod C_w, t, h·W_o + w] · X~[n, c, h·s − p + a·d, w·s − p + b·d]

    input (N, C, H, W); weight (N, C_w, K², H_o·W_o) with C_w dividing C (interleaved sharing:
    channel c uses weight channel c mod C_w); H_o = (H + 2p − d(K−1) − 1)//s + 1, likewise W_o.
    pad_mode 'zero' | 'reflect' (reflect needs padding <= H−1, W−1). Returns (N, C, H_o, W_o).
    """
    if torch.jit.is_scripting():  # TorchScript: the dispatcher op itself
        return torch.ops.localattn.aggregation(input.contiguous(), weight.contiguous(), kernel_size, stride, padding,
                                               dilation, pad_mode == "reflect")
    op = "localattn.ops.aggregation"
    like = ("input", _validate.tensor(op, "input", input, ("N", "C", "H", "W")))
    k, s, p, d, reflect, ho, wo = _validate.san_window(op, input, kernel_size, stride, padding, dilation,
                                                       pad_mode, centred=False)
    w_layout = ("N", "C_w", "K*K", "H_o*W_o")
    _validate.tensor(op, "weight", weight, w_layout, like)
    n, c = input.shape[:2]
    cw = weight.shape[1]
    if cw == 0 or c % cw != 0:
        raise ValueError(f"{op}: weight channels C_w={cw} must divide the input channels C={c}")
    _validate.shape(op, "weight", weight, w_layout, (n, cw, k * k, ho * wo))
    input, weight = input.contiguous(), weight.contiguous()
    if _use_reference(input.device, "aggregation"):
        if input.numel() == 0 or weight.numel() == 0:
            return input.new_zeros((n, c, ho, wo))
        return reference.aggregation(input, weight, k, s, p, d, "reflect" if reflect else "zero")
    return ops.aggregation(input, weight, k, s, p, d, reflect)


def subtraction2(input1: Tensor, input2: Tensor, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, pad_mode: str = "reflect"):
    """SAN subtraction2 (spec san.md §1.3): centre of input1 minus neighbour of input2,

        D[n,c,t,h·W_o + w] = X1[n,c,h·s,w·s] − X~2[n,c, h·s − p + a·d, w·s − p + b·d]

    input1, input2 (N, C, H, W); padding must be dilation·(K−1)/2 (centred window).
    Returns (N, C, K², H_o·W_o).
    """
    if torch.jit.is_scripting():  # TorchScript: the dispatcher op itself
        return torch.ops.localattn.subtraction2(input1.contiguous(), input2.contiguous(), kernel_size, stride, padding,
                                                dilation, pad_mode == "reflect")
    op = "localattn.ops.subtraction2"
    like = ("input1", _validate.tensor(op, "input1", input1, ("N", "C", "H", "W")))
    _validate.tensor(op, "input2", input2, ("N", "C", "H", "W"), like)
    _validate.shape(op, "input2", input2, ("N", "C", "H", "W"), input1.shape)
    k, s, p, d, reflect, ho, wo = _validate.san_window(op, input1, kernel_size, stride, padding, dilation,
                                                       pad_mode, centred=True)
    input1, input2 = input1.contiguous(), input2.contiguous()
    if _use_reference(input1.device, "subtraction2"):
        if input1.numel() == 0:
            return input1.new_zeros((*input1.shape[:2], k * k, ho * wo))
        return reference.subtraction2(input1, input2, k, s, p, d, "reflect" if reflect else "zero")
    return ops.subtraction2(input1, input2, k, s, p, d, reflect)


def subtraction(input: Tensor, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                pad_mode: str = "reflect"):
    """SAN subtraction (spec san.md §1.4) = subtraction2(input, input, ...); returns (N, C, K², H_o·W_o)."""
    return subtraction2(input, input, kernel_size, stride, padding, dilation, pad_mode)


def san_pairwise(x1, x2, position, value, scale0, shift0, weight2, shift2, weight5, bias5, kernel_size,
                 dilation=1):
    """Fused SAN pairwise attention: SAM's weight branch with its BatchNorms as affine maps, softmax over
    the K² taps and the aggregation of `value`, without any K²-sized intermediate (spec san.md §2.4):

        u = relu(scale0·([x1; position](centre) − [x2; position](neighbour t)) + shift0)    (R+2 channels)
        out[n,c,l] = Σ_t softmax_t(weight5 · relu(weight2 · u + shift2) + bias5)[c mod C_w] · value~[n,c,nb t]

    x1, x2 (N, R, H, W); position (2, H, W); value (N, C, H, W), one dtype; scale0, shift0 (R+2,);
    weight2 (M, R+2); shift2 (M,); weight5 (C_w, M); bias5 (C_w,), any float dtype (used in float32 or
    wider); C_w divides C. Reflect borders, padding dilation·(K−1)/2, stride 1. Returns (N, C, H, W) in
    value's dtype. Definition: `localattn.ops.reference.san_pairwise`.
    """
    op = "localattn.ops.san_pairwise"
    k = _validate.kernel_size(op, kernel_size)
    d = _validate.integer(op, "dilation", dilation, 1)
    like = ("x1", _validate.tensor(op, "x1", x1, ("N", "R", "H", "W")))
    n, rel, h, w = x1.shape
    _validate.tensor(op, "x2", x2, ("N", "R", "H", "W"), like)
    _validate.shape(op, "x2", x2, ("N", "R", "H", "W"), x1.shape)
    _validate.tensor(op, "value", value, ("N", "C", "H", "W"), like)
    c = value.shape[1]
    _validate.shape(op, "value", value, ("N", "C", "H", "W"), (n, c, h, w))
    hidden, cw = weight2.shape[0] if weight2.dim() else 0, weight5.shape[0] if weight5.dim() else 0
    for name, tensor, layout, size in (
            ("position", position, ("2", "H", "W"), (2, h, w)), ("scale0", scale0, ("R+2",), (rel + 2,)),
            ("shift0", shift0, ("R+2",), (rel + 2,)), ("weight2", weight2, ("M", "R+2"), (hidden, rel + 2)),
            ("shift2", shift2, ("M",), (hidden,)), ("weight5", weight5, ("C_w", "M"), (cw, hidden)),
            ("bias5", bias5, ("C_w",), (cw,))):
        _validate.tensor(op, name, tensor, layout, like, same_dtype=False)
        _validate.shape(op, name, tensor, layout, size)
    if cw == 0 or c % cw != 0:
        raise ValueError(f"{op}: weight5 rows C_w={cw} must divide the value channels C={c}")
    _validate.san_window(op, x1, k, 1, d * (k - 1) // 2, d, "reflect", centred=True)
    args = (x1, x2, position, value, scale0, shift0, weight2, shift2, weight5, bias5, k, d)
    if _use_reference(value.device, "san_pairwise"):
        return reference.san_pairwise(*args)
    return ops.san_pairwise(*args)


def san_patchwise(hidden, value, weight5, bias5, kernel_size, dilation=1):
    """Fused SAN patchwise attention: SAM's last weight layer (conv_w.5) and the aggregation of `value`,
    without writing the (N, C_w·K², H·W) weights (spec san.md §2.4, patchwise):

        out[n,c,l] = Σ_t (weight5 · hidden[n,:,l] + bias5)[(c mod C_w)·K² + t] · value~[n,c, neighbour t of l]

    hidden (N, M, H, W) (conv_w up to its last ReLU), value (N, C, H, W), one dtype; weight5 (C_w·K², M),
    bias5 (C_w·K²,), any float dtype (used in float32 or wider); C_w divides C. Reflect borders, padding
    dilation·(K−1)/2, stride 1, no softmax. Returns (N, C, H, W) in value's dtype. Definition:
    `localattn.ops.reference.san_patchwise`.
    """
    op = "localattn.ops.san_patchwise"
    k = _validate.kernel_size(op, kernel_size)
    d = _validate.integer(op, "dilation", dilation, 1)
    like = ("hidden", _validate.tensor(op, "hidden", hidden, ("N", "M", "H", "W")))
    n, m, h, w = hidden.shape
    _validate.tensor(op, "value", value, ("N", "C", "H", "W"), like)
    c = value.shape[1]
    _validate.shape(op, "value", value, ("N", "C", "H", "W"), (n, c, h, w))
    _validate.tensor(op, "weight5", weight5, ("C_w*K*K", "M"), like, same_dtype=False)
    cw = weight5.shape[0] // (k * k)
    if weight5.shape[0] % (k * k) or cw == 0 or c % cw:
        raise ValueError(f"{op}: weight5 must have C_w*K*K rows (K*K = {k * k}) with C_w dividing the value "
                         f"channels C={c}, got {weight5.shape[0]} rows")
    _validate.shape(op, "weight5", weight5, ("C_w*K*K", "M"), (cw * k * k, m))
    _validate.tensor(op, "bias5", bias5, ("C_w*K*K",), like, same_dtype=False)
    _validate.shape(op, "bias5", bias5, ("C_w*K*K",), (cw * k * k,))
    _validate.san_window(op, hidden, k, 1, d * (k - 1) // 2, d, "reflect", centred=True)
    args = (hidden, value, weight5, bias5, k, d)
    if _use_reference(value.device, "san_patchwise"):
        return reference.san_patchwise(*args)
    return ops.san_patchwise(*args)
