"""Triton kernels (`localattn.ops.triton`) vs the pure-PyTorch reference, forward and backward.

There is no GPU here: the kernels run on CPU tensors through Triton's interpreter. TRITON_INTERPRET is
read when `@triton.jit` decorates, so one child process (this file run as a script, with
TRITON_INTERPRET=1) runs every case's launchers on inputs made here; this process computes the
reference (float64 autograd of `localattn.ops.reference` on the same inputs) and compares.
"""
import inspect
import os
import subprocess
import sys
import zlib

import pytest
import torch

from localattn.ops import reference

OPS = ("elsa", "elsa_backward", "elsa_attention", "elsa_attention_backward", "aggregation", "aggregation_backward",
       "subtraction2", "subtraction2_backward", "san_pairwise", "san_patchwise")
FORWARD_ONLY = ("san_pairwise", "san_patchwise")  # their autograd formulas (ops/_san_fused.py) compose the unfused ops
CHANNELS_LAST = "_channels_last"  # case-name suffix: 4-D inputs and grad_out in channels-last memory

# (name, dtype, shape (N, C, H, W), kernel_size, dilation, stride, ghost_mul?, ghost_add?)
ELSA_CASES = [
    ("elsa_k1", torch.float64, (1, 3, 4, 5), 1, 1, 1, True, True),
    ("elsa_k3_plain", torch.float64, (2, 3, 5, 7), 3, 1, 1, False, False),
    ("elsa_k3_d2_s2_add", torch.float32, (1, 4, 7, 6), 3, 2, 2, False, True),
    ("elsa_k5_s2_mul", torch.float64, (1, 3, 9, 6), 5, 1, 2, True, False),
    ("elsa_k5_d2_both", torch.float32, (2, 2, 8, 5), 5, 2, 1, True, True),
    ("elsa_k7_d2_both", torch.float32, (1, 2, 6, 8), 7, 2, 1, True, True),
    ("elsa_k3_bf16", torch.bfloat16, (1, 4, 6, 6), 3, 1, 1, True, True),
    ("elsa_k7_s2_fp16", torch.float16, (1, 3, 7, 9), 7, 1, 2, False, True),
    ("elsa_empty_output", torch.float64, (1, 2, 1, 5), 3, 1, 2, True, True),  # H//s == 0
    ("elsa_k3_strips", torch.float64, (1, 3, 40, 8), 3, 1, 1, True, True),  # several strips per plane
    ("elsa_k3_s2_strips", torch.float32, (1, 2, 70, 16), 3, 1, 2, True, True),
    ("elsa_k3_channels_last", torch.float64, (2, 3, 5, 7), 3, 1, 1, True, True),
]

# (name, dtype, (B, G, C, H, W), kernel_size, dilation, stride, ghost_mul?, ghost_add?, permuted?)
# permuted: logits, values and grad_out are channels-last views of NCHW storage (not contiguous)
ELSA_ATTENTION_CASES = [
    ("elsa_attention_k3_both", torch.float64, (1, 2, 3, 5, 6), 3, 1, 1, True, True, False),
    ("elsa_attention_k3_d2_s2_add", torch.float64, (2, 1, 4, 7, 5), 3, 2, 2, False, True, False),
    ("elsa_attention_k5_mul", torch.float32, (1, 3, 2, 6, 7), 5, 1, 1, True, False, False),
    ("elsa_attention_k7_plain", torch.float64, (1, 1, 2, 9, 4), 7, 1, 1, False, False, False),
    ("elsa_attention_k3_strips", torch.float64, (1, 2, 2, 40, 8), 3, 1, 1, True, True, False),
    ("elsa_attention_k3_s2_strips", torch.float64, (1, 1, 3, 70, 16), 3, 1, 2, True, True, False),
    ("elsa_attention_k3_permuted", torch.float64, (2, 2, 3, 5, 6), 3, 1, 1, True, True, True),
    ("elsa_attention_k3_bf16", torch.bfloat16, (1, 2, 4, 6, 6), 3, 1, 1, True, True, False),
    ("elsa_attention_k5_fp16", torch.float16, (1, 1, 3, 7, 9), 5, 1, 2, False, True, False),
    ("elsa_attention_empty_output", torch.float64, (1, 1, 2, 1, 5), 3, 1, 2, True, True, False),
]

# (name, dtype, shape (N, C, H, W), C_w, kernel_size, stride, padding, dilation, reflect)
AGGREGATION_CASES = [
    (f"aggregation_{name}_{'reflect' if reflect else 'zero'}", dtype, shape, cw, k, s, p, d, reflect)
    for reflect in (False, True)
    for name, dtype, shape, cw, k, s, p, d in [
        ("k1", torch.float64, (1, 3, 3, 4), 1, 1, 1, 0, 1),
        ("k3", torch.float32, (2, 4, 5, 7), 2, 3, 1, 1, 1),
        ("k3_s2_d2", torch.float64, (1, 4, 7, 6), 4, 3, 2, 2, 2),
        ("k3_tiny_p2", torch.float64, (1, 2, 3, 3), 2, 3, 1, 2, 1),
        ("k5_s4_d2_p4", torch.float64, (1, 6, 9, 7), 3, 5, 4, 4, 2),
        ("k7", torch.float32, (1, 4, 4, 6), 4, 7, 2, 3, 1),
    ]
] + [
    ("aggregation_k3_bf16_reflect", torch.bfloat16, (1, 4, 6, 5), 2, 3, 1, 1, 1, True),
    ("aggregation_k5_fp16_zero", torch.float16, (1, 4, 6, 7), 2, 5, 1, 2, 1, False),
    ("aggregation_k3_strips_reflect", torch.float64, (1, 4, 40, 8), 2, 3, 1, 1, 1, True),
    ("aggregation_k3_s2_strips_zero", torch.float64, (1, 2, 70, 16), 1, 3, 2, 1, 1, False),
    ("aggregation_k3_reflect_channels_last", torch.float64, (2, 4, 5, 7), 2, 3, 1, 1, 1, True),
]

# (name, dtype, shape (N, C, H, W), kernel_size, stride, dilation, reflect); padding = d(K-1)/2
SUBTRACTION_CASES = [
    (f"subtraction2_{name}_{'reflect' if reflect else 'zero'}", dtype, shape, k, s, d, reflect)
    for reflect in (False, True)
    for name, dtype, shape, k, s, d in [
        ("k1", torch.float64, (1, 2, 3, 4), 1, 1, 1),
        ("k3", torch.float32, (2, 3, 5, 7), 3, 1, 1),
        ("k3_s2_d2", torch.float64, (1, 2, 3, 4), 3, 2, 2),
        ("k5_s4_d2_p4", torch.float64, (1, 2, 9, 6), 5, 4, 2),
        ("k7", torch.float32, (1, 2, 4, 5), 7, 1, 1),
    ]
] + [
    ("subtraction2_k3_bf16_reflect", torch.bfloat16, (1, 3, 5, 6), 3, 2, 1, True),
    ("subtraction2_k5_fp16_zero", torch.float16, (1, 3, 6, 5), 5, 1, 1, False),
    ("subtraction2_k3_strips_reflect", torch.float64, (1, 2, 40, 8), 3, 1, 1, True),
    ("subtraction2_k3_s2_strips_zero", torch.float64, (1, 2, 70, 16), 3, 2, 1, False),
    ("subtraction2_k3_reflect_channels_last", torch.float64, (2, 3, 5, 7), 3, 1, 1, True),
]

# (name, value dtype, parameter dtype, (N, R, hidden M, C_w, C, H, W), kernel_size, dilation)
SAN_PAIRWISE_CASES = [
    ("san_pairwise_k3", torch.float64, torch.float64, (2, 3, 4, 2, 6, 5, 6), 3, 1),
    ("san_pairwise_k7_cw8", torch.float64, torch.float64, (1, 4, 4, 8, 16, 9, 7), 7, 1),
    ("san_pairwise_k3_d2_strips", torch.float64, torch.float64, (1, 2, 3, 3, 6, 40, 8), 3, 2),
    ("san_pairwise_k5_bf16", torch.bfloat16, torch.float32, (1, 2, 3, 2, 4, 7, 6), 5, 1),
    ("san_pairwise_k3_channels_last", torch.float64, torch.float64, (1, 3, 2, 2, 4, 6, 5), 3, 1),
]

# (name, value dtype, parameter dtype, (N, hidden M, C_w, C, H, W), kernel_size, dilation)
SAN_PATCHWISE_CASES = [
    ("san_patchwise_k3", torch.float64, torch.float64, (2, 4, 2, 6, 5, 6), 3, 1),
    ("san_patchwise_k7_cw8", torch.float64, torch.float64, (1, 3, 8, 16, 9, 7), 7, 1),
    ("san_patchwise_k3_d2_strips", torch.float64, torch.float64, (1, 3, 3, 6, 70, 8), 3, 2),
    ("san_patchwise_k5_bf16", torch.bfloat16, torch.float32, (1, 3, 2, 4, 7, 6), 5, 1),
    ("san_patchwise_k3_channels_last", torch.float64, torch.float64, (1, 2, 2, 4, 6, 5), 3, 1),
    ("san_patchwise_k5_image_groups", torch.float64, torch.float64, (5, 8, 3, 12, 5, 5), 5, 1),  # see the tiling test
]

TOLERANCES = {  # (atol, rtol) of a kernel result vs the float64 reference
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1.3e-6),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 1e-2),
}


def _randn(generator, dtype, *shape):
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


def _layout(name, tensors, grad_out):
    """Channels-last copies of the 4-D tensors and grad_out for a `CHANNELS_LAST` case."""
    if not name.endswith(CHANNELS_LAST):
        return tensors, grad_out

    def convert(t):
        return t.contiguous(memory_format=torch.channels_last) if t is not None and t.dim() == 4 else t
    return tuple(convert(t) for t in tensors), convert(grad_out)


def elsa_case(name, dtype, shape, kernel_size, dilation, stride, with_mul, with_add):
    """Forward args, grad_out and the schema's non-tensor args of one ELSA case."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    n, c, h, w = shape
    taps = kernel_size * kernel_size
    features = _randn(g, dtype, n, c, h, w)
    ghost_mul = _randn(g, dtype, n, c, kernel_size, kernel_size) if with_mul else None
    ghost_add = _randn(g, dtype, n, c, kernel_size, kernel_size) if with_add else None
    h_attn = _randn(g, dtype, n, taps, h // stride, w // stride)
    grad_out = _randn(g, dtype, n, c, h // stride, w // stride)
    return (*_layout(name, (features, ghost_mul, ghost_add, h_attn), grad_out), (kernel_size, dilation, stride))


def elsa_attention_case(name, dtype, shape, kernel_size, dilation, stride, with_mul, with_add, permuted):
    """Forward args, grad_out and the schema's non-tensor args of one fused ELSA attention case."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    b, heads, c, h, w = shape
    taps = kernel_size * kernel_size

    def channels_last(*size):  # (B, h, w, channels), as a permuted view of (B, channels, h, w) when permuted
        if permuted:
            return _randn(g, dtype, size[0], size[3], size[1], size[2]).permute(0, 2, 3, 1)
        return _randn(g, dtype, *size)

    logits = channels_last(b, h // stride, w // stride, heads * taps)
    values = channels_last(b, h, w, heads * c)
    ghost_mul = _randn(g, dtype, heads * c, kernel_size, kernel_size) if with_mul else None
    ghost_add = _randn(g, dtype, heads * c, kernel_size, kernel_size) if with_add else None
    grad_out = channels_last(b, h // stride, w // stride, heads * c)
    return (logits, values, ghost_mul, ghost_add), grad_out, (kernel_size, dilation, stride)


def aggregation_case(name, dtype, shape, weight_channels, kernel_size, stride, padding, dilation, reflect):
    """Forward args, grad_out and the schema's non-tensor args of one aggregation case."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    n, c, h, w = shape
    ho, wo = (reference.output_size(size, kernel_size, stride, padding, dilation) for size in (h, w))
    input = _randn(g, dtype, n, c, h, w)
    weight = _randn(g, dtype, n, weight_channels, kernel_size * kernel_size, ho * wo)
    grad_out = _randn(g, dtype, n, c, ho, wo)
    return (*_layout(name, (input, weight), grad_out), (kernel_size, stride, padding, dilation, reflect))


def subtraction_case(name, dtype, shape, kernel_size, stride, dilation, reflect):
    """Forward args, grad_out and the schema's non-tensor args of one subtraction2 case."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    n, c, h, w = shape
    padding = dilation * (kernel_size - 1) // 2
    ho, wo = (reference.output_size(size, kernel_size, stride, padding, dilation) for size in (h, w))
    inputs = (_randn(g, dtype, n, c, h, w), _randn(g, dtype, n, c, h, w))
    grad_out = _randn(g, dtype, n, c, kernel_size * kernel_size, ho * wo)
    return (*_layout(name, inputs, grad_out), (kernel_size, stride, padding, dilation, reflect))


def san_pairwise_case(name, dtype, param_dtype, shape, kernel_size, dilation):
    """Forward args (no grad_out: forward-only op) and the schema's non-tensor args of one SAN pairwise case."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    n, rel, hidden, cw, c, h, w = shape

    def param(*size):
        return _randn(g, param_dtype, *size)

    tensors = (_randn(g, dtype, n, rel, h, w), _randn(g, dtype, n, rel, h, w), param(2, h, w),
               _randn(g, dtype, n, c, h, w), param(rel + 2), param(rel + 2), param(hidden, rel + 2), param(hidden),
               param(cw, hidden), param(cw))
    tensors, _ = _layout(name, tensors, None)
    return tensors, None, (kernel_size, dilation)


def san_patchwise_case(name, dtype, param_dtype, shape, kernel_size, dilation):
    """Forward args (no grad_out: forward-only op) and the schema's non-tensor args of one SAN patchwise case."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    n, hidden, cw, c, h, w = shape
    weights = cw * kernel_size * kernel_size
    tensors = (_randn(g, dtype, n, hidden, h, w), _randn(g, dtype, n, c, h, w), _randn(g, param_dtype, weights, hidden),
               _randn(g, param_dtype, weights))
    tensors, _ = _layout(name, tensors, None)
    return tensors, None, (kernel_size, dilation)


def all_cases():
    """{case name: (op, dtype, forward tensors, grad_out, non-tensor args)} for every case above."""
    cases = {}
    for op, builder, table in [("elsa", elsa_case, ELSA_CASES), ("elsa_attention", elsa_attention_case,
                                                                 ELSA_ATTENTION_CASES),
                               ("aggregation", aggregation_case, AGGREGATION_CASES),
                               ("subtraction2", subtraction_case, SUBTRACTION_CASES),
                               ("san_pairwise", san_pairwise_case, SAN_PAIRWISE_CASES),
                               ("san_patchwise", san_patchwise_case, SAN_PATCHWISE_CASES)]:
        for row in table:
            tensors, grad_out, args = builder(*row)
            cases[row[0]] = (op, row[1], tensors, grad_out, args)
    return cases


def backward_args(op, tensors, grad_out, args):
    """Arguments of `<op>_backward` in schema order."""
    if op == "subtraction2":
        return (grad_out, *tensors[0].shape[2:], *args)
    return (grad_out, *tensors, *args)


def run_kernels(cases_path, results_path):
    """Child process: run every case's Triton forward and backward, save {name: (out, grads)}."""
    from localattn.ops import triton as kernels

    results = {}
    for name, (op, _, tensors, grad_out, args) in torch.load(cases_path).items():
        if name.endswith(CHANNELS_LAST) or name.endswith("_permuted"):  # torch.save kept the strides
            assert not tensors[0].is_contiguous() and (grad_out is None or not grad_out.is_contiguous()), name
        out = kernels.KERNELS[op](*tensors, *args)
        if op in FORWARD_ONLY:
            results[name] = (out, None)
            continue
        grads = kernels.KERNELS[op + "_backward"](*backward_args(op, tensors, grad_out, args))
        if name in REPEATED:
            again = kernels.KERNELS[op + "_backward"](*backward_args(op, tensors, grad_out, args))
            grads = (grads, again)
        results[name] = (out, grads)
    torch.save(results, results_path)


def reference_results(op, tensors, grad_out, args):
    """Reference forward and gradients in float64 (absent ghost tensors get no gradient: None)."""
    wide = [None if t is None else t.double().requires_grad_() for t in tensors]
    if op in FORWARD_ONLY:
        return getattr(reference, op)(*wide, *args).detach(), None
    if op in ("elsa", "elsa_attention"):
        out = getattr(reference, op)(*wide, *args)
    else:
        *geometry, reflect = args
        pad_mode = "reflect" if reflect else "zero"
        out = getattr(reference, op)(*wide, *geometry, pad_mode=pad_mode)
    present = [t for t in wide if t is not None]
    grads = iter(torch.autograd.grad(out, present, grad_out.double()))
    return out, [None if t is None else next(grads) for t in wide]


CASES = all_cases()
# backward run twice: bit-equal (two-pass sums)
REPEATED = [name for name, case in CASES.items() if "_strips" in name and case[0] not in FORWARD_ONLY]


@pytest.fixture(scope="module")
def kernel_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("triton")
    torch.save(CASES, folder / "cases.pt")
    env = dict(os.environ, TRITON_INTERPRET="1")
    subprocess.run([sys.executable, __file__, str(folder / "cases.pt"), str(folder / "results.pt")],
                   env=env, check=True, timeout=600)
    return torch.load(folder / "results.pt")


def _assert_matches(actual, expected, dtype, what):
    atol, rtol = TOLERANCES[dtype]
    assert actual.dtype == dtype, what
    torch.testing.assert_close(actual.double(), expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_triton_kernel_matches_reference(kernel_results, name):
    op, dtype, tensors, grad_out, args = CASES[name]
    out, grads = kernel_results[name]
    if name in REPEATED:
        grads, again = grads
        for i, (first, second) in enumerate(zip(grads, again)):
            assert torch.equal(first, second), f"{name}: gradient {i} differs between two identical runs"
    ref_out, ref_grads = reference_results(op, tensors, grad_out, args)
    _assert_matches(out, ref_out, dtype, f"{name} forward")
    if op in FORWARD_ONLY:
        return
    # ELSA returns (features, mul, add, attn) gradients, the same order as its inputs (fused ELSA too).
    assert len(grads) == len(ref_grads)
    for i, (grad, ref_grad) in enumerate(zip(grads, ref_grads)):
        if ref_grad is None:
            assert grad.numel() == 0, f"{name}: gradient {i} of an absent tensor must be empty"
        else:
            _assert_matches(grad, ref_grad, dtype, f"{name} gradient {i}")


def test_patchwise_image_groups_case_has_a_partial_group_and_a_partial_chunk():
    """san_patchwise_k5_image_groups: programs of 3 whole images (the last has 2) and weight-channel chunks of 2
    channels (the last has 1), each pixel block spanning images."""
    from localattn.ops.triton.san_patchwise import _tiling

    hidden, value, weight5, _ = CASES["san_patchwise_k5_image_groups"][2]
    tiles = _tiling(hidden, value, weight5, 5, 1)
    assert (tiles.images, tiles.strips.strips, tiles.chunk_channels, tiles.chunks, tiles.grid) == (3, 1, 2, 2, (4,))
    assert [tiles.program(pid)[0::2] for pid in range(4)] == [(3, range(0, 2)), (3, range(2, 3)), (2, range(0, 2)),
                                                              (2, range(2, 3))]
    assert tiles.block_p > 25


def test_register_cuda_kernels_registers_every_op_with_its_schema():
    import localattn.ops  # noqa: F401  (loads the C++ schemas)
    from localattn.ops.triton import KERNELS, register_cuda_kernels

    assert set(KERNELS) == set(OPS)
    register_cuda_kernels()
    for op in OPS:
        schema = getattr(torch.ops.localattn, op).default._schema
        assert [a.name for a in schema.arguments] == list(inspect.signature(KERNELS[op]).parameters), op
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"localattn::{op}", "CUDA"), op


if __name__ == "__main__":
    run_kernels(*sys.argv[1:])
