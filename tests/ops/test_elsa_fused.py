"""Fused ELSA attention `localattn.ops.elsa_attention` (softmax over K² + ghost filter + aggregation on
channels-last tensors) against the unfused graph: relayout to (B·G, ·, H, W), softmax, and the official
`elsa` reference (`reference.elsa_attention`), forward and every gradient; every compiled ISA path;
fp32 / bf16 / autocast; gradcheck, opcheck, torch.compile, bit-determinism, bad inputs."""
import pytest
import torch

import localattn.ops as L
from localattn.ops import reference

ops = torch.ops.localattn
ISAS = ("baseline", "avx2", "avx512")


def make(b=2, h=7, w=9, heads=2, c=5, k=3, d=1, s=1, ghost="both", dtype=torch.float64, seed=0):
    """(logits, values, ghost_mul, ghost_add, k, d, s) with random entries."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    logits = rand(b, h // s, w // s, heads * k * k) * 2
    values = rand(b, h, w, heads * c)
    mul = rand(heads * c, k, k) if ghost in ("both", "mul") else None
    add = rand(heads * c, k, k) * 0.1 if ghost in ("both", "add") else None
    return logits, values, mul, add, k, d, s


def forward_backward(fn, args, grad_seed=1):
    """Output and the gradients of every tensor input (None where absent) for a fixed output gradient."""
    leaves = [t.detach().clone().requires_grad_() if isinstance(t, torch.Tensor) else t for t in args]
    out = fn(*leaves)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64).to(out.dtype)
    out.backward(grad)
    return out.detach(), [t.grad if isinstance(t, torch.Tensor) else None for t in leaves[:4]]


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test on one compiled ISA path (capped at what this CPU has), then restores the best."""
    detected = ops._set_cpu_isa("avx512")
    used = ops._set_cpu_isa(request.param)
    assert used == ISAS[min(ISAS.index(request.param), ISAS.index(detected))]
    yield used
    ops._set_cpu_isa("avx512")


CASES = {
    "both": dict(),
    "mul": dict(ghost="mul"),
    "add-7x7": dict(ghost="add", k=7, h=9, w=8, heads=3, c=32),   # the ELSA-Swin setting, 2 channel blocks
    "none": dict(ghost="none"),
    "s2-d2-k5": dict(k=5, d=2, s=2, h=11, w=10),                  # H not a multiple of s: floor lattice
    "d2": dict(k=3, d=2, h=9, w=11),                              # stride 1, dilation 2: not the dense-window loop
    "s3-block-tail": dict(s=3, h=10, w=12, heads=3, c=20),       # 20 channels: a full and a partial block
    "k1": dict(k=1, heads=3, c=1),
    "wide-rows": dict(k=5, h=5, w=37, heads=2, c=20),             # Wo = 2·16 + 5: whole pixel vectors + a tail on every ISA
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_unfused_graph_float64(case, isa):
    args = make(**CASES[case])
    out, grads = forward_backward(L.elsa_attention, args)
    ref, ref_grads = forward_backward(reference.elsa_attention, args)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for got, expected in zip(grads, ref_grads):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-11)


def test_reference_is_the_official_op_on_the_layer_layout():
    """The reference equals `elsa` (spec §1.2) on (B·G, C, H, W) values and per-head softmaxed maps."""
    logits, values, mul, add, k, d, s = make(b=2, heads=3, c=2, k=3, s=1)
    attn = logits.view(2, 7, 9, 3, 9).softmax(-1).permute(0, 3, 4, 1, 2).reshape(6, 9, 7, 9)
    x = values.permute(0, 3, 1, 2).reshape(6, 2, 7, 9)
    ghost = [t.expand(2, -1, -1, -1).reshape(6, 2, 3, 3) for t in (mul, add)]
    expected = reference.elsa(x, *ghost, attn, 3).reshape(2, 6, 7, 9).permute(0, 2, 3, 1)
    torch.testing.assert_close(reference.elsa_attention(logits, values, mul, add, k, d, s), expected,
                               rtol=0, atol=1e-14)


def assert_matches_float64(args, dtype, tol):
    """Output and gradients of `args` (in `dtype`) against the float64 reference on the same rounded inputs."""
    out, grads = forward_backward(L.elsa_attention, args)
    wide = [t.double() if isinstance(t, torch.Tensor) else t for t in args]  # the same rounded inputs
    ref, ref_grads = forward_backward(reference.elsa_attention, wide)
    assert [g is None for g in grads] == [g is None for g in ref_grads]  # None: that ghost tensor is absent
    grads, ref_grads = [g for g in grads if g is not None], [g for g in ref_grads if g is not None]
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    scale = ref.abs().max()
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * scale)
    for got, expected in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), expected, rtol=tol, atol=tol * expected.abs().max())


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_low_precision_matches_float64(dtype, tol, isa):
    """Stage-3-like shape (K = 7, 3 heads of 32 channels): float32 / bfloat16 / float16 inputs, float32 accumulation."""
    assert_matches_float64(make(b=2, h=10, w=10, heads=3, c=32, k=7, ghost="both", dtype=dtype), dtype, tol)


@pytest.mark.parametrize("case", list(CASES))
def test_float32_matches_float64_on_every_isa(case, isa):
    """Every ghost / stride / shape case through every compiled vector path in float32 (float64 itself runs
    the baseline kernel only)."""
    assert_matches_float64(make(**CASES[case], dtype=torch.float32), torch.float32, 2e-5)


def test_float32_softmax_of_logits_far_below_the_max(isa):
    """Logit gaps of up to ~10^4 (far past e^-87, where float32's exp underflows): the fused softmax is finite
    and equals float64's on every vector path, forward and backward."""
    logits, *rest = make(**CASES["add-7x7"], dtype=torch.float32)
    assert_matches_float64((logits * 1000, *rest), torch.float32, 2e-5)


def test_float32_taps_beyond_exp_underflow_get_no_weight(isa):
    """Every tap that reads pixel (0, 0) has a logit ~100 below its pixel's others (weight e^-100 ≈ 4e-44 in
    float64) and (0, 0) holds 1e36: float32 must give those taps no weight, as float64 nearly does. The
    kernel's exp clamped at -87.3 and gave those taps 1.6e-38 / sum each (outputs off by up to 3.5e-2)."""
    logits, values, mul, add, k, d, s = make(b=1, h=9, w=9, heads=2, c=16, k=7, ghost="mul", dtype=torch.float32)
    r = k // 2
    for i in range(r + 1):
        for j in range(r + 1):
            for head in range(2):
                logits[0, i, j, head * k * k + (r - i) * k + (r - j)] = -100.0
    values[0, 0, 0] = 1e36
    assert_matches_float64((logits, values, mul, add, k, d, s), torch.float32, 2e-5)


def test_gradcheck_float64():
    for case in ("both", "s2-d2-k5"):
        kw = dict(CASES[case], b=1, heads=2, c=3)
        logits, values, mul, add, k, d, s = make(**kw)
        leaves = [t.requires_grad_() for t in (logits, values, mul, add)]
        assert torch.autograd.gradcheck(lambda *t: L.elsa_attention(*t, k, d, s), leaves, eps=1e-6, atol=1e-7)


def test_channel_slice_of_a_channels_last_tensor_is_read_in_place():
    """values / logits as channel slices of larger channels-last tensors (as the layer passes them)."""
    logits, values, mul, add, k, d, s = make(heads=2, c=5)
    big_v = torch.cat([torch.randn(*values.shape[:3], 7, dtype=values.dtype), values], -1)
    big_l = torch.cat([logits, torch.randn(*logits.shape[:3], 3, dtype=logits.dtype)], -1)
    v_view, l_view = big_v[..., 7:], big_l[..., :logits.shape[-1]]
    assert not v_view.is_contiguous() and v_view.stride(-1) == 1
    torch.testing.assert_close(L.elsa_attention(l_view, v_view, mul, add, k, d, s),
                               L.elsa_attention(logits, values, mul, add, k, d, s), rtol=0, atol=0)


@pytest.mark.parametrize("case", ["both", "s2-d2-k5"])
def test_opcheck(case):
    logits, values, mul, add, k, d, s = make(**dict(CASES[case], b=1, heads=2, c=3))
    args = (logits.requires_grad_(), values.requires_grad_(), mul.requires_grad_(), add, k, d, s)
    assert set(torch.library.opcheck(ops.elsa_attention, args).values()) == {"SUCCESS"}
    grad = torch.randn(1, *logits.shape[1:3], 6, dtype=torch.float64)
    bw_args = (grad, logits.detach(), values.detach(), None, add, k, d, s)
    assert set(torch.library.opcheck(ops.elsa_attention_backward, bw_args).values()) == {"SUCCESS"}


def test_torch_compile_fullgraph():
    args = make(ghost="add", k=3, heads=2, c=4, dtype=torch.float32)
    fn = torch.compile(lambda lg, v, m, a: L.elsa_attention(lg, v, m, a, 3, 1, 1).square().sum(), fullgraph=True)
    out, grads = forward_backward(fn, args[:4])
    ref, ref_grads = forward_backward(lambda lg, v, m, a: L.elsa_attention(lg, v, m, a, 3, 1, 1).square().sum(),
                                      args[:4])
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)
    for got, expected in zip(grads, ref_grads):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)


def test_bit_deterministic_across_runs_and_thread_counts():
    args = make(b=3, h=14, w=14, heads=3, c=32, k=7, ghost="both", dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            results.append(forward_backward(L.elsa_attention, args))
    finally:
        torch.set_num_threads(threads)
    for out, grads in results[1:]:
        assert torch.equal(out, results[0][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, results[0][1]))


def test_autocast_runs_the_op_in_bfloat16():
    """Under CPU autocast every input is cast to bfloat16 (the op reads bf16, accumulates in fp32)."""
    logits, values, mul, add, k, d, s = make(heads=3, c=32, k=7, h=8, w=8, dtype=torch.float32)
    leaves = [t.requires_grad_() for t in (logits, values, add)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = L.elsa_attention(leaves[0], leaves[1], None, leaves[2], k, d, s)
    assert out.dtype == torch.bfloat16
    bf = [t.detach().bfloat16() for t in leaves]
    assert torch.equal(out, ops.elsa_attention(bf[0], bf[1], None, bf[2], k, d, s))
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in leaves)


def t(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


BAD = [
    ("values rank", dict(values=t(2, 6, 6)), ValueError, r"values must be 4-D \(B, H, W, G\*C\)"),
    ("logits rank", dict(logits=t(2, 6, 54)), ValueError, r"logits must be 4-D"),
    ("logits K^2", dict(logits=t(2, 6, 6, 10)), ValueError, r"logits must have G\*K\*K channels"),
    ("heads divide", dict(values=t(2, 6, 6, 7)), ValueError, r"values channels 7 must be divisible by .* G = 2"),
    ("logits spatial", dict(stride=2), ValueError, r"logits must have shape \(B, H//stride"),
    ("ghost rank", dict(ghost_add=t(2, 6, 3, 3)), ValueError, r"ghost_add must be 3-D \(G\*C, K, K\)"),
    ("ghost shape", dict(ghost_add=t(6, 5, 5)), ValueError, r"ghost_add must have shape \(G\*C, K, K\)"),
    ("ghost dtype", dict(ghost_mul=t(6, 3, 3, dtype=torch.float64)), TypeError, r"ghost_mul has dtype"),
    ("logits dtype", dict(logits=t(2, 6, 6, 18, dtype=torch.float64)), TypeError, r"logits has dtype"),
    ("integer values", dict(values=t(2, 6, 6, 6, dtype=torch.int32)), TypeError, r"values must be float16"),
    ("even kernel", dict(kernel_size=4), ValueError, r"kernel_size must be odd"),
    ("dilation", dict(dilation=0), ValueError, r"dilation must be >= 1"),
]


@pytest.mark.parametrize("name,override,error,message", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_name_the_argument(name, override, error, message):
    args = dict(logits=t(2, 6, 6, 18), values=t(2, 6, 6, 6), ghost_mul=None, ghost_add=None, kernel_size=3,
                dilation=1, stride=1)
    args.update(override)
    with pytest.raises(error, match=message):
        L.elsa_attention(**args)


def test_direct_dispatcher_call_checks_shapes():
    with pytest.raises(ValueError, match=r"localattn::elsa_attention: logits must have shape"):
        ops.elsa_attention(t(2, 3, 3, 18), t(2, 6, 6, 6), None, None, 3, 1, 1)
    with pytest.raises(ValueError, match=r"localattn::elsa_attention: ghost_add must have shape"):
        ops.elsa_attention(t(2, 6, 6, 18), t(2, 6, 6, 6), None, t(6, 5, 5), 3, 1, 1)
