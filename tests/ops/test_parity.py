"""Compiled CPU kernels vs the unfold-based reference (issue 2 §5): forward and all gradients in
float32 (atol 1e-5) and in float16 / bfloat16 against a float32 reference computed from the same
(rounded) inputs (1e-2 / 5e-2). Errors are taken relative to max(1, max |reference|)."""
import pytest
import torch

from ops_cases import FLOAT_TOL, LOW_PRECISION_TOL, Case, forward_backward, max_error, ours, reference

CASES = [
    Case("elsa", k=7, n=2, c=8, h=13, w=11),
    Case("elsa", k=5, s=2, d=2, n=2, c=5, h=12, w=15, ghost="add"),
    Case("elsa", k=3, s=3, d=1, n=3, c=4, h=10, w=8, ghost="mul"),
    Case("elsa", k=1, n=1, c=3, h=4, w=6, ghost="none"),
    Case("aggregation", k=7, n=2, c=16, cw=4, h=12, w=10, pad_mode="reflect"),
    Case("aggregation", k=3, s=2, d=2, n=2, c=6, cw=3, h=11, w=9, pad_mode="zero"),
    Case("aggregation", k=5, s=4, d=2, p=4, n=1, c=4, cw=2, h=9, w=13, pad_mode="reflect"),
    Case("aggregation", k=3, s=1, d=1, p=0, n=1, c=2, cw=1, h=6, w=5, pad_mode="zero"),
    Case("subtraction2", k=7, n=2, c=5, h=12, w=10, pad_mode="reflect"),
    Case("subtraction2", k=5, s=4, d=2, p=4, n=1, c=3, h=9, w=11, pad_mode="zero"),
    Case("subtraction", k=3, s=2, d=2, n=2, c=3, h=9, w=7, pad_mode="reflect"),
    Case("subtraction", k=5, n=1, c=2, h=8, w=6, pad_mode="zero"),
]


def case_id(c):
    return f"{c.op}-k{c.k}s{c.s}d{c.d}p{c.padding}-{c.pad_mode if c.op != 'elsa' else c.ghost}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_forward_backward(case):
    inputs = case.inputs(torch.float32)
    out, grads = forward_backward(case, ours, inputs)
    ref_out, ref_grads = forward_backward(case, reference, inputs)
    assert out.dtype == torch.float32 and out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out, atol=FLOAT_TOL, rtol=0)
    for grad, ref_grad in zip(grads, ref_grads):
        if ref_grad is not None:
            torch.testing.assert_close(grad, ref_grad, atol=FLOAT_TOL, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_low_precision_forward_backward(case, dtype):
    inputs = case.inputs(dtype)
    out, grads = forward_backward(case, ours, inputs)
    upcast = [t.float() if t is not None else None for t in inputs]
    ref_out, ref_grads = forward_backward(case, reference, upcast, grad_dtype=dtype)
    tol = LOW_PRECISION_TOL[dtype]
    assert out.dtype == dtype
    assert max_error(out, ref_out) <= tol
    for grad, ref_grad in zip(grads, ref_grads):
        if ref_grad is not None:
            assert grad.dtype == dtype
            assert max_error(grad, ref_grad) <= tol


def test_float64_matches_reference_tightly():
    case = Case("elsa", k=5, s=2, d=1, n=2, c=3, h=9, w=10)
    inputs = case.inputs(torch.float64)
    out, grads = forward_backward(case, ours, inputs)
    ref_out, ref_grads = forward_backward(case, reference, inputs)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=0)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=0)


def test_large_plane_runs_in_parallel_and_matches():
    """A shape big enough that every kernel splits its work over threads."""
    case = Case("aggregation", k=7, n=2, c=32, cw=8, h=28, w=30, pad_mode="reflect")
    inputs = case.inputs(torch.float32)
    out, grads = forward_backward(case, ours, inputs)
    ref_out, ref_grads = forward_backward(case, reference, inputs)
    torch.testing.assert_close(out, ref_out, atol=FLOAT_TOL, rtol=0)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, atol=FLOAT_TOL, rtol=0)


# The stride-1 centred reflect aggregation the SAN layers run has register-tiled kernels of its own (16-pixel
# tiles, bands of rows, channels sharing a weight channel four at a time): widths below, at and above a tile,
# bands that end early, dilation, a C/C_w of 1, 3 (no group of four) and 8.
TILED_AGGREGATIONS = [
    Case("aggregation", k=3, n=2, c=6, cw=2, h=13, w=5),
    Case("aggregation", k=7, n=1, c=16, cw=2, h=9, w=19),
    Case("aggregation", k=5, d=2, n=2, c=4, cw=4, h=7, w=16),
    Case("aggregation", k=7, n=1, c=24, cw=3, h=20, w=33),
]


@pytest.mark.parametrize("case", TILED_AGGREGATIONS, ids=lambda c: f"k{c.k}d{c.d}-C{c.c}/{c.cw}-{c.h}x{c.w}")
def test_tiled_aggregation_equals_reference_on_every_isa(case, every_isa):
    inputs = case.inputs(torch.float64)
    ref_out, ref_grads = forward_backward(case, reference, inputs)
    for isa in every_isa:
        torch.ops.localattn._set_cpu_isa(isa)
        out, grads = forward_backward(case, ours, inputs)
        torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=0, msg=isa)
        for grad, ref_grad in zip(grads, ref_grads):
            torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=0, msg=isa)
