"""The public functions of `localattn.ops` (re-exported there): argument checks, contiguous inputs,
then the dispatcher op, or the pure-PyTorch reference on a device with no kernel."""
from . import _validate, reference
from ._library import has_kernel, ops


def _use_reference(device, op_name):
    return device.type != "cpu" and not has_kernel(op_name, device.type)


def elsa(features, ghost_mul, ghost_add, h_attn, kernel_size, dilation=1, stride=1):
    """ELSA aggregation (spec elsa.md §1.2), zero borders, cross-correlation orientation:

        out[n,c,i,j] = Σ_k (M[n,c,k]·A[n,k,i,j] + D[n,c,k]) · X[n,c, i·s + (ky−r)·d, j·s + (kx−r)·d]

    features (N, C, H, W) = X; ghost_mul = M and ghost_add = D of shape (N, C, K, K), each may be
    None (all ones / all zeros, nothing materialised); h_attn (N, K², H//stride, W//stride) = A.
    kernel_size K odd; dilation d, stride s >= 1. Returns (N, C, H//stride, W//stride).
    """
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


def aggregation(input, weight, kernel_size, stride=1, padding=0, dilation=1, pad_mode="reflect"):
    """SAN aggregation (spec san.md §1.2):

        Y[n,c,h,w] = Σ_t W[n, c mod C_w, t, h·W_o + w] · X~[n, c, h·s − p + a·d, w·s − p + b·d]

    input (N, C, H, W); weight (N, C_w, K², H_o·W_o) with C_w dividing C (interleaved sharing:
    channel c uses weight channel c mod C_w); H_o = (H + 2p − d(K−1) − 1)//s + 1, likewise W_o.
    pad_mode 'zero' | 'reflect' (reflect needs padding <= H−1, W−1). Returns (N, C, H_o, W_o).
    """
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


def subtraction2(input1, input2, kernel_size, stride=1, padding=0, dilation=1, pad_mode="reflect"):
    """SAN subtraction2 (spec san.md §1.3): centre of input1 minus neighbour of input2,

        D[n,c,t,h·W_o + w] = X1[n,c,h·s,w·s] − X~2[n,c, h·s − p + a·d, w·s − p + b·d]

    input1, input2 (N, C, H, W); padding must be dilation·(K−1)/2 (centred window).
    Returns (N, C, K², H_o·W_o).
    """
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


def subtraction(input, kernel_size, stride=1, padding=0, dilation=1, pad_mode="reflect"):
    """SAN subtraction (spec san.md §1.4) = subtraction2(input, input, ...); returns (N, C, K², H_o·W_o)."""
    return subtraction2(input, input, kernel_size, stride, padding, dilation, pad_mode)
