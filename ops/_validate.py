"""Argument checks of the public ops (issue 2 §4).

Every failure names the op, the argument and what was expected: `TypeError` for wrong Python types
and dtypes, `ValueError` for shapes, values and devices. The checks only read tensor metadata, so
they trace under `torch.compile` without graph breaks.
"""
import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
PAD_MODES = {"zero": False, "reflect": True, 0: False, 1: True}


def integer(op, name, value, minimum):
    """A Python int >= minimum (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value}")
    return value


def kernel_size(op, value):
    """A positive odd int."""
    integer(op, "kernel_size", value, 1)
    if value % 2 == 0:
        raise ValueError(f"{op}: kernel_size must be odd (the window is centred), got {value}")
    return value


def pad_mode(op, value):
    """'zero' | 'reflect' (or the original SAN codes 0 | 1) -> True for reflect."""
    if isinstance(value, bool) or value not in PAD_MODES:
        raise ValueError(f"{op}: pad_mode must be 'zero' or 'reflect' (or 0 / 1), got {value!r}")
    return PAD_MODES[value]


def tensor(op, name, value, layout, like=None, same_dtype=True):
    """A floating-point tensor of rank len(layout); same dtype (unless not same_dtype) and device as
    `like` = (name, tensor)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != len(layout):
        raise ValueError(f"{op}: {name} must be {len(layout)}-D {layout_str(layout)}, "
                         f"got shape {tuple(value.shape)}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {value.dtype}")
    if like is not None:
        like_name, other = like
        if same_dtype and value.dtype != other.dtype:
            raise TypeError(f"{op}: {name} has dtype {value.dtype} but {like_name} has {other.dtype}; "
                            "all tensors must share one dtype")
        if value.device != other.device:
            raise ValueError(f"{op}: {name} is on {value.device} but {like_name} is on {other.device}; "
                             "all tensors must be on one device")
    return value


def shape(op, name, value, layout, expected):
    """value.shape == expected, else an error quoting the symbolic layout and the numbers."""
    if tuple(value.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} must have shape {layout_str(layout)} = {tuple(expected)}, "
                         f"got {tuple(value.shape)}")


def layout_str(layout):
    return "(" + ", ".join(layout) + ")"


def san_output_size(size, kernel_size, stride, padding, dilation):
    """SAN output length (size + 2p - d(k-1) - 1) // s + 1, or 0 for an empty input axis."""
    span = size + 2 * padding - dilation * (kernel_size - 1) - 1
    return span // stride + 1 if span >= 0 else 0


def san_window(op, input, kernel_size_, stride, padding, dilation, pad_mode_, centred):
    """Checks the SAN window arguments against `input` (N, C, H, W); returns (k, s, p, d, reflect, H_o, W_o)."""
    k = kernel_size(op, kernel_size_)
    s = integer(op, "stride", stride, 1)
    p = integer(op, "padding", padding, 0)
    d = integer(op, "dilation", dilation, 1)
    reflect = pad_mode(op, pad_mode_)
    if centred and 2 * p != d * (k - 1):
        raise ValueError(f"{op}: padding must be dilation*(kernel_size-1)/2 = {d * (k - 1) // 2} so that "
                         f"the window is centred on its pixel, got padding={p}")
    h, w = input.shape[-2:]
    if reflect and p > 0 and (p >= h or p >= w):
        raise ValueError(f"{op}: reflect padding {p} needs an input of at least {p + 1}x{p + 1} "
                         f"(padding <= size - 1), got {h}x{w}; use a smaller padding or pad_mode='zero'")
    ho, wo = (san_output_size(n, k, s, p, d) for n in (h, w))
    if (ho == 0 and h > 0) or (wo == 0 and w > 0):
        raise ValueError(f"{op}: input {h}x{w} is too small for kernel_size={k}, dilation={d} and "
                         f"padding={p} (window extent {d * (k - 1) + 1})")
    return k, s, p, d, reflect, ho, wo
