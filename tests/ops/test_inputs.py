"""Bad input gives a clear error naming the argument and what was expected (issue 2 §4), never a
crash or a silent wrong answer; empty, non-contiguous and channels-last inputs give correct results."""
import pytest
import torch

import localattn.ops as L
from ops_cases import Case, FLOAT_TOL, forward_backward, ours, reference

ops = torch.ops.localattn


def t(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device) if dtype.is_floating_point else \
        torch.zeros(*shape, dtype=dtype, device=device)


def elsa_args(**over):
    args = dict(features=t(2, 3, 8, 6), ghost_mul=t(2, 3, 3, 3), ghost_add=t(2, 3, 3, 3), h_attn=t(2, 9, 8, 6),
                kernel_size=3, dilation=1, stride=1)
    args.update(over)
    return args


def agg_args(**over):
    args = dict(input=t(2, 4, 8, 6), weight=t(2, 2, 9, 48), kernel_size=3, stride=1, padding=1, dilation=1,
                pad_mode="reflect")
    args.update(over)
    return args


def sub2_args(**over):
    args = dict(input1=t(2, 4, 8, 6), input2=t(2, 4, 8, 6), kernel_size=3, stride=1, padding=1, dilation=1,
                pad_mode="zero")
    args.update(over)
    return args


BAD = [
    # (id, function, kwargs, exception, message regex)
    ("elsa features rank", L.elsa, elsa_args(features=t(3, 8, 6)), ValueError, r"features must be 4-D \(N, C, H, W\)"),
    ("elsa h_attn rank", L.elsa, elsa_args(h_attn=t(2, 9, 48)), ValueError, r"h_attn must be 4-D"),
    ("elsa ghost rank", L.elsa, elsa_args(ghost_add=t(3, 3, 3)), ValueError, r"ghost_add must be 4-D"),
    ("elsa h_attn K^2", L.elsa, elsa_args(h_attn=t(2, 8, 8, 6)), ValueError,
     r"h_attn must have shape \(N, K\*K, H//stride, W//stride\) = \(2, 9, 8, 6\), got \(2, 8, 8, 6\)"),
    ("elsa h_attn spatial", L.elsa, elsa_args(h_attn=t(2, 9, 8, 6), stride=2), ValueError,
     r"h_attn must have shape .* = \(2, 9, 4, 3\)"),
    ("elsa h_attn batch", L.elsa, elsa_args(h_attn=t(1, 9, 8, 6)), ValueError, r"h_attn must have shape"),
    ("elsa ghost batch", L.elsa, elsa_args(ghost_mul=t(1, 3, 3, 3)), ValueError,
     r"ghost_mul must have shape \(N, C, K, K\) = \(2, 3, 3, 3\)"),
    ("elsa ghost channels", L.elsa, elsa_args(ghost_add=t(2, 4, 3, 3)), ValueError, r"ghost_add must have shape"),
    ("elsa ghost kernel", L.elsa, elsa_args(ghost_add=t(2, 3, 5, 5)), ValueError, r"ghost_add must have shape"),
    ("elsa even kernel", L.elsa, elsa_args(kernel_size=4, h_attn=t(2, 16, 8, 6)), ValueError,
     r"kernel_size must be odd"),
    ("elsa zero kernel", L.elsa, elsa_args(kernel_size=0), ValueError, r"kernel_size must be >= 1, got 0"),
    ("elsa negative kernel", L.elsa, elsa_args(kernel_size=-3), ValueError, r"kernel_size must be >= 1"),
    ("elsa float kernel", L.elsa, elsa_args(kernel_size=3.0), TypeError, r"kernel_size must be an int"),
    ("elsa bool kernel", L.elsa, elsa_args(kernel_size=True), TypeError, r"kernel_size must be an int"),
    ("elsa zero stride", L.elsa, elsa_args(stride=0), ValueError, r"stride must be >= 1, got 0"),
    ("elsa zero dilation", L.elsa, elsa_args(dilation=0), ValueError, r"dilation must be >= 1, got 0"),
    ("elsa negative dilation", L.elsa, elsa_args(dilation=-1), ValueError, r"dilation must be >= 1"),
    ("elsa mixed dtype", L.elsa, elsa_args(h_attn=t(2, 9, 8, 6, dtype=torch.float64)), TypeError,
     r"h_attn has dtype torch.float64 but features has torch.float32"),
    ("elsa mixed ghost dtype", L.elsa, elsa_args(ghost_mul=t(2, 3, 3, 3, dtype=torch.float16)), TypeError,
     r"ghost_mul has dtype torch.float16"),
    ("elsa integer", L.elsa, elsa_args(features=t(2, 3, 8, 6, dtype=torch.int64)), TypeError,
     r"features must be float16, bfloat16, float32 or float64, got torch.int64"),
    ("elsa bool tensor", L.elsa, elsa_args(h_attn=t(2, 9, 8, 6, dtype=torch.bool)), TypeError,
     r"h_attn must be float16"),
    ("elsa mixed device", L.elsa, elsa_args(h_attn=t(2, 9, 8, 6, device="meta")), ValueError,
     r"h_attn is on meta but features is on cpu"),
    ("elsa not a tensor", L.elsa, elsa_args(features=[[1.0]]), TypeError, r"features must be a torch.Tensor, got list"),
    ("agg input rank", L.aggregation, agg_args(input=t(4, 8, 6)), ValueError, r"input must be 4-D \(N, C, H, W\)"),
    ("agg weight rank", L.aggregation, agg_args(weight=t(2, 2, 432)), ValueError,
     r"weight must be 4-D \(N, C_w, K\*K, H_o\*W_o\)"),
    ("agg weight batch", L.aggregation, agg_args(weight=t(3, 2, 9, 48)), ValueError,
     r"weight must have shape \(N, C_w, K\*K, H_o\*W_o\) = \(2, 2, 9, 48\), got \(3, 2, 9, 48\)"),
    ("agg weight K^2", L.aggregation, agg_args(weight=t(2, 2, 8, 48)), ValueError, r"weight must have shape"),
    ("agg weight L", L.aggregation, agg_args(weight=t(2, 2, 9, 47)), ValueError, r"= \(2, 2, 9, 48\), got"),
    ("agg weight channels", L.aggregation, agg_args(weight=t(2, 3, 9, 48)), ValueError,
     r"weight channels C_w=3 must divide the input channels C=4"),
    ("agg even kernel", L.aggregation, agg_args(kernel_size=2), ValueError,
     r"kernel_size must be odd \(the window is centred\), got 2"),
    ("agg zero stride", L.aggregation, agg_args(stride=0), ValueError, r"stride must be >= 1"),
    ("agg zero dilation", L.aggregation, agg_args(dilation=0), ValueError, r"dilation must be >= 1"),
    ("agg negative padding", L.aggregation, agg_args(padding=-1), ValueError, r"padding must be >= 0, got -1"),
    ("agg reflect too large", L.aggregation, agg_args(input=t(2, 4, 3, 6), padding=3, weight=t(2, 2, 9, 40)),
     ValueError, r"reflect padding 3 needs an input of at least 4x4 \(padding <= size - 1\), got 3x6"),
    ("agg too small", L.aggregation, agg_args(kernel_size=7, padding=0, pad_mode="zero", weight=t(2, 2, 49, 1)),
     ValueError, r"input 8x6 is too small for kernel_size=7"),
    ("agg pad mode", L.aggregation, agg_args(pad_mode="circular"), ValueError,
     r"pad_mode must be 'zero' or 'reflect' \(or 0 / 1\), got 'circular'"),
    ("agg pad mode bool", L.aggregation, agg_args(pad_mode=True), ValueError, r"pad_mode must be"),
    ("agg mixed dtype", L.aggregation, agg_args(weight=t(2, 2, 9, 48, dtype=torch.float64)), TypeError,
     r"weight has dtype torch.float64 but input has torch.float32"),
    ("agg integer", L.aggregation, agg_args(input=t(2, 4, 8, 6, dtype=torch.int32)), TypeError,
     r"input must be float16, bfloat16, float32 or float64, got torch.int32"),
    ("agg mixed device", L.aggregation, agg_args(weight=t(2, 2, 9, 48, device="meta")), ValueError,
     r"weight is on meta but input is on cpu"),
    ("sub2 input shapes", L.subtraction2, sub2_args(input2=t(2, 4, 8, 5)), ValueError,
     r"input2 must have shape \(N, C, H, W\) = \(2, 4, 8, 6\), got \(2, 4, 8, 5\)"),
    ("sub2 channels", L.subtraction2, sub2_args(input2=t(2, 3, 8, 6)), ValueError, r"input2 must have shape"),
    ("sub2 rank", L.subtraction2, sub2_args(input1=t(2, 4, 8, 6, 1)), ValueError, r"input1 must be 4-D"),
    ("sub2 not centred", L.subtraction2, sub2_args(padding=0), ValueError,
     r"padding must be dilation\*\(kernel_size-1\)/2 = 1 so that the window is centred"),
    ("sub2 mixed dtype", L.subtraction2, sub2_args(input2=t(2, 4, 8, 6, dtype=torch.bfloat16)), TypeError,
     r"input2 has dtype torch.bfloat16 but input1 has torch.float32"),
    ("sub2 mixed device", L.subtraction2, sub2_args(input2=t(2, 4, 8, 6, device="meta")), ValueError,
     r"input2 is on meta but input1 is on cpu"),
    ("sub2 reflect too large", L.subtraction2, sub2_args(input1=t(1, 1, 2, 9), input2=t(1, 1, 2, 9), kernel_size=5,
                                                         padding=2, pad_mode="reflect"), ValueError,
     r"reflect padding 2 needs an input of at least 3x3"),
    ("sub2 even kernel", L.subtraction2, sub2_args(kernel_size=4), ValueError, r"kernel_size must be odd"),
    ("sub integer", L.subtraction, dict(input=t(1, 2, 5, 5, dtype=torch.uint8), kernel_size=3, padding=1), TypeError,
     r"input1 must be float16"),
    ("sub stride", L.subtraction, dict(input=t(1, 2, 5, 5), kernel_size=3, padding=1, stride=-2), ValueError,
     r"stride must be >= 1, got -2"),
]


@pytest.mark.parametrize("fn,kwargs,exc,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises_clear_error(fn, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(**kwargs)


@pytest.mark.parametrize("module,args", [
    (L.Aggregation, (4,)), (L.Subtraction, (0,)), (L.Subtraction2, (3, 0)), (L.Aggregation, (3, 1, -1)),
    (L.Subtraction, (3, 1, 1, 0)), (L.Subtraction2, (3, 1, 1, 1, 2)), (L.Aggregation, (3, 1, 1, 1, "same")),
])
def test_module_constructor_rejects_bad_window(module, args):
    with pytest.raises(ValueError, match=module.__name__):
        module(*args)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: ops.elsa(t(2, 3, 8, 6), None, None, t(2, 8, 8, 6), 3, 1, 1), ValueError, r"h_attn must have shape"),
    (lambda: ops.elsa(t(2, 3, 8, 6), None, None, t(2, 9, 8, 6), 2, 1, 1), ValueError,
     r"kernel_size must be a positive odd"),
    (lambda: ops.aggregation(t(2, 4, 8, 6), t(2, 3, 9, 48), 3, 1, 1, 1, True), ValueError, r"C_w must divide"),
    (lambda: ops.aggregation(t(2, 4, 2, 6), t(2, 2, 9, 12), 3, 1, 2, 1, True), ValueError, r"reflect padding 2"),
    (lambda: ops.subtraction2(t(2, 4, 8, 6), t(2, 4, 8, 6), 3, 1, 0, 1, True), ValueError, r"centred window"),
    (lambda: ops.subtraction2(t(2, 4, 8, 6), t(2, 4, 8, 6, dtype=torch.float64), 3, 1, 1, 1, True), TypeError,
     r"input2 has dtype"),
    (lambda: ops.subtraction2_backward(t(2, 4, 9, 47), 8, 6, 3, 1, 1, 1, True), ValueError,
     r"grad_out must have shape"),
    (lambda: ops.elsa_backward(t(2, 3, 8, 5), t(2, 3, 8, 6), None, None, t(2, 9, 8, 6), 3, 1, 1), ValueError,
     r"grad_out must have shape"),
], ids=range(8))
def test_raw_ops_check_their_arguments(call, exc, match):
    """The dispatcher ops themselves never read out of bounds on bad arguments."""
    with pytest.raises(exc, match=match):
        call()


EMPTY = [
    Case("elsa", n=0), Case("elsa", c=0), Case("elsa", h=0), Case("elsa", h=1, s=2), Case("elsa", w=0, ghost="none"),
    Case("aggregation", n=0), Case("aggregation", c=0), Case("aggregation", h=0, pad_mode="zero"),
    Case("aggregation", w=0, p=0, k=1, pad_mode="reflect"),
    Case("subtraction2", n=0), Case("subtraction2", c=0), Case("subtraction", h=0, pad_mode="zero"),
    Case("subtraction", w=0, k=1, pad_mode="reflect"),
]


@pytest.mark.parametrize("case", EMPTY, ids=lambda c: f"{c.op}-n{c.n}c{c.c}h{c.h}w{c.w}s{c.s}")
def test_empty_tensors_return_empty(case):
    inputs = case.inputs(torch.float32)
    out, grads = forward_backward(case, ours, inputs)
    assert out.numel() == 0
    ho, wo = case.out_hw()
    if case.op in ("elsa", "aggregation"):
        expected = (case.n, case.c, ho, wo)
    else:
        expected = (case.n, case.c, case.k ** 2, ho * wo)
    assert tuple(out.shape) == expected
    for grad, x in zip(grads, inputs):
        if x is not None:
            assert grad.shape == x.shape and not grad.any()


def _layouts(x):
    """The same values as channels-last, as a strided view, and as a transposed copy."""
    yield x.to(memory_format=torch.channels_last)
    yield torch.stack([x, x], dim=-1).flatten(-2)[..., ::2]
    yield x.transpose(-1, -2).contiguous().transpose(-1, -2)


@pytest.mark.parametrize("case", [
    Case("elsa", k=3, s=2, c=4, h=8, w=9),
    Case("aggregation", k=3, c=4, cw=2, h=7, w=6, pad_mode="reflect"),
    Case("subtraction2", k=5, c=3, h=7, w=8, pad_mode="zero"),
    Case("subtraction", k=3, c=3, h=6, w=5, pad_mode="reflect"),
], ids=lambda c: c.op)
def test_non_contiguous_and_channels_last_inputs(case):
    inputs = case.inputs(torch.float32)
    expected, expected_grads = forward_backward(case, reference, inputs)
    for variant in range(3):
        strided = tuple(list(_layouts(x))[variant] if x is not None else None for x in inputs)
        assert any(x is not None and not x.is_contiguous() for x in strided)
        out, grads = forward_backward(case, ours, strided)
        torch.testing.assert_close(out, expected, atol=FLOAT_TOL, rtol=0)
        for a, b in zip(grads, expected_grads):
            if b is not None:
                torch.testing.assert_close(a, b, atol=FLOAT_TOL, rtol=0)


def test_expanded_ghost_gradient_is_reduced_over_the_batch():
    """ELSA-Swin builds (N,C,K,K) ghosts by expanding a (1,C,K,K) parameter: autograd must sum."""
    x, attn = torch.randn(3, 2, 6, 6), torch.softmax(torch.randn(3, 9, 6, 6), 1)
    param = torch.randn(1, 2, 3, 3, requires_grad=True)
    L.elsa(x, None, param.expand(3, -1, -1, -1), attn, 3).sum().backward()
    ref_param = param.detach().clone().requires_grad_()
    reference.elsa(x, None, ref_param.expand(3, -1, -1, -1), attn, 3).sum().backward()
    torch.testing.assert_close(param.grad, ref_param.grad, atol=FLOAT_TOL, rtol=0)
