"""Fused SAN attention `localattn.ops.san_pairwise` and `san_patchwise` (issue 10 items 2-3): parity with the
pure-PyTorch definitions on every compiled ISA path, float64 gradcheck, opcheck, torch.compile(fullgraph=True),
determinism, bad inputs; and the SAM layer: fused inference equals the published (unfused) layer graph,
autocast-safe dtypes."""
import pytest
import torch

import localattn.ops as L
from localattn.layers import SAM
from localattn.layers import san as san_layers
from localattn.ops import reference
from ops_cases import LOW_PRECISION_TOL, max_error

unfold = torch.nn.functional.unfold

ops = torch.ops.localattn

# (N, R, M, C_w, C, H, W, K, dilation): SAN's stage shapes in miniature, plus odd widths (not multiples of the
# 16-pixel tile), non-square maps, dilation, reflect padding = size - 1, hidden width M != R, C/C_w groups.
SHAPES = [(2, 4, 4, 2, 8, 5, 6, 3, 1), (1, 3, 5, 2, 4, 9, 19, 5, 2), (2, 6, 6, 3, 12, 4, 4, 7, 1),
          (1, 8, 8, 4, 16, 7, 37, 7, 1), (1, 2, 3, 1, 3, 3, 17, 3, 1)]


def make_inputs(n, rel, hidden, cw, c, h, w, dtype=torch.float64, seed=0):
    """x1, x2, position, value and the weight-branch parameters of SAN's scale (BN scales around 1)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    return (rand(n, rel, h, w), rand(n, rel, h, w), rand(2, h, w), rand(n, c, h, w),
            rand(rel + 2).abs() + 0.5, rand(rel + 2) * 0.3, rand(hidden, rel + 2) / (rel + 2) ** 0.5,
            rand(hidden) * 0.1, rand(cw, hidden) / hidden ** 0.5, rand(cw) * 0.1)


def test_isa_detection_reports_a_known_path(every_isa):
    assert ops._cpu_isa() in ("baseline", "avx2", "avx512")
    assert every_isa[0] == "baseline" and every_isa[-1] == ops._cpu_isa()
    with pytest.raises(ValueError, match="isa must be one of"):
        ops._set_cpu_isa("sse9")


def assert_float64_equals_definition(fn, definition, inputs, k, d, isas):
    expected = definition(*inputs, k, d)
    for isa in isas:
        ops._set_cpu_isa(isa)
        torch.testing.assert_close(fn(*inputs, k, d), expected, rtol=1e-10, atol=1e-10, msg=isa)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float64_equals_definition_on_every_isa(shape, every_isa):
    *sizes, k, d = shape
    assert_float64_equals_definition(L.san_pairwise, reference.san_pairwise, make_inputs(*sizes), k, d, every_isa)


def assert_low_precision_close(fn, definition, inputs, k, d, isas):
    """fn in the inputs' dtype on every ISA path against the definition in float64; returns (expected, tol)."""
    dtype = inputs[0].dtype
    expected = definition(*(t.double() for t in inputs), k, d)
    tol = 1e-5 if dtype == torch.float32 else LOW_PRECISION_TOL[dtype]
    for isa in isas:
        ops._set_cpu_isa(isa)
        out = fn(*inputs, k, d)
        assert out.dtype == dtype and max_error(out, expected) < tol, isa
    return expected, tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_against_float64(dtype, every_isa):
    *sizes, k, d = SHAPES[3]
    assert_low_precision_close(L.san_pairwise, reference.san_pairwise, make_inputs(*sizes, dtype=dtype), k, d,
                               every_isa)


def test_float32_parameters_with_bfloat16_activations():
    """Autocast's mix: activations in bf16, BatchNorm-folded parameters in float32 (used in float32)."""
    *sizes, k, d = SHAPES[0]
    inputs = make_inputs(*sizes)
    mixed = [t.to(torch.bfloat16) if i in (0, 1, 3) else t.float() for i, t in enumerate(inputs)]
    out = L.san_pairwise(*mixed, k, d)
    assert out.dtype == torch.bfloat16
    expected = reference.san_pairwise(*(t.double() for t in mixed), k, d)
    assert max_error(out, expected) < LOW_PRECISION_TOL[torch.bfloat16]


def test_gradcheck_float64():
    inputs = tuple(t.requires_grad_() for t in make_inputs(1, 2, 3, 2, 4, 4, 5))
    assert torch.autograd.gradcheck(lambda *a: L.san_pairwise(*a, 3, 1), inputs, fast_mode=True)


def replace(inputs, index, value):
    return tuple(value if i == index else t for i, t in enumerate(inputs))


@pytest.mark.parametrize("index,value,error,match", [
    (1, torch.zeros(2, 4, 5, 7, dtype=torch.float64), ValueError, "x2 must have shape"),
    (2, torch.zeros(3, 5, 6, dtype=torch.float64), ValueError, "position must have shape"),
    (3, torch.zeros(2, 8, 5, 6, dtype=torch.float32), TypeError, "value has dtype torch.float32"),
    (3, torch.zeros(2, 7, 5, 6, dtype=torch.float64), ValueError, "C_w=2 must divide the value channels C=7"),
    (4, torch.zeros(5, dtype=torch.float64), ValueError, "scale0 must have shape"),
    (6, torch.zeros(4, 5, dtype=torch.float64), ValueError, "weight2 must have shape"),
    (8, torch.zeros(2, 3, dtype=torch.float64), ValueError, "weight5 must have shape"),
    (9, torch.zeros(2, dtype=torch.int64), TypeError, "bias5 must be float16, bfloat16, float32 or float64"),
], ids=["x2", "position", "value-dtype", "groups", "scale0", "weight2", "weight5", "bias5-dtype"])
def test_bad_inputs_name_the_argument(index, value, error, match):
    inputs = replace(make_inputs(2, 4, 4, 2, 8, 5, 6), index, value)
    with pytest.raises(error, match=match):
        L.san_pairwise(*inputs, 3, 1)


def test_bad_window_and_small_map():
    inputs = make_inputs(1, 2, 2, 1, 2, 3, 8)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        L.san_pairwise(*inputs, 4, 1)
    with pytest.raises(ValueError, match="reflect padding 3 needs an input of at least 4x4"):
        L.san_pairwise(*inputs, 7, 1)
    with pytest.raises(ValueError, match="reflect padding 3 needs a map of at least 4x4"):  # the op itself
        ops.san_pairwise(*inputs, 7, 1)


# ------------------------------------------------------------------------------------------------ SAM layer
def pairwise_sam(kernel_size=7, sa_type="pairwise", dilation=1):
    torch.manual_seed(0)
    sam = SAM(sa_type, in_planes=32, rel_planes=8, out_planes=32, share_planes=4, kernel_size=kernel_size,
              dilation=dilation)
    for bn in (sam.conv_w[0], sam.conv_w[3]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return sam.eval()


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_sam_fused_inference_equals_published_graph(kernel_size, monkeypatch):
    sam, x = pairwise_sam(kernel_size), torch.randn(2, 32, 9, 20)
    with torch.no_grad():
        assert sam.uses_fused_kernel(x)
        fused = sam(x)
        monkeypatch.setattr(san_layers, "inference_fast_path", lambda: False)
        assert not sam.uses_fused_kernel(x)
        torch.testing.assert_close(fused, sam(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (7, 1), (5, 2)])
def test_sam_patchwise_folded_inference_equals_published_graph(kernel_size, dilation, per_row, fused, monkeypatch):
    """Patchwise inference (BatchNorms folded, patch features in one pass, the whole window or one window row at
    a time; then `san_patchwise`, or conv_w.5 and the aggregation where the device has no fused kernel) against
    the published graph in float64."""
    sam, x = pairwise_sam(kernel_size, "patchwise", dilation).double(), torch.randn(2, 32, 11, 13, dtype=torch.float64)
    if per_row:
        monkeypatch.setattr(san_layers, "PATCH_CHUNK_BYTES", 0)
    if not fused:
        monkeypatch.setattr(san_layers, "has_kernel", lambda op, device: op != "san_patchwise")
    with torch.no_grad():
        assert sam.uses_fused_kernel(x) == fused
    aggregations, aggregation = [], L.aggregation
    monkeypatch.setattr(L, "aggregation", lambda *a: aggregations.append(1) or aggregation(*a))
    calls = []
    monkeypatch.setattr(torch.nn.functional, "unfold", lambda *a, **k: calls.append(1) or unfold(*a, **k))
    with torch.no_grad():
        folded = sam(x)
        assert not calls  # the patch tensor is not built
        assert len(aggregations) == (0 if fused else 1)
        monkeypatch.setattr(san_layers, "inference_fast_path", lambda: False)
        published = sam(x)
    assert calls
    torch.testing.assert_close(folded, published, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_sam_keeps_published_graph_for_training_and_gradients(sa_type):
    sam, x = pairwise_sam(sa_type=sa_type), torch.randn(1, 32, 8, 8)
    assert not sam.uses_fused_kernel(x)  # autograd on
    with torch.no_grad():
        assert not sam.train().uses_fused_kernel(x)  # batch statistics


@pytest.mark.parametrize("train", [True, False])
def test_sam_pairwise_under_autocast_with_float32_softmax(train, monkeypatch):
    """CUDA autocast runs the 1x1 convs in half precision but softmax in float32 (CPU autocast keeps softmax in
    bfloat16, so its policy is emulated on the CPU one): the layer must aggregate one dtype. Before the fix:
    TypeError 'weight has dtype torch.float32 but input has torch.bfloat16'."""
    monkeypatch.setattr(san_layers.F, "softmax", lambda t, dim: torch.softmax(t.float(), dim))
    sam, x = pairwise_sam(3).train(train), torch.randn(2, 32, 8, 9)
    with torch.set_grad_enabled(train):
        expected = sam(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = sam(x)
    assert out.dtype == torch.bfloat16
    assert max_error(out, expected.detach()) < 5e-2


# ------------------------------------------------------------------------------- fused patchwise attention
# (N, M, C_w, C, H, W, K, dilation): odd widths, dilation, padding = size - 1, C/C_w groups, and the row
# bands of the CPU kernel (>= 48 pixels: 14x14 in bands of 4 rows, a last short band; 7x7 in one band; a
# 3-pixel-wide map in bands of 16 rows).
PATCHWISE_SHAPES = [(2, 2, 2, 8, 5, 6, 3, 1), (1, 3, 2, 4, 9, 19, 5, 2), (2, 3, 3, 12, 4, 4, 7, 1),
                    (1, 4, 4, 16, 7, 37, 7, 1), (1, 2, 1, 3, 3, 17, 3, 1), (2, 8, 8, 16, 14, 14, 7, 1),
                    (1, 4, 2, 4, 7, 7, 7, 1), (1, 2, 2, 4, 23, 3, 3, 1)]


def make_patchwise_inputs(n, hidden, cw, c, h, w, k, dtype=torch.float64, seed=0):
    """hidden (after conv_w's last ReLU), value, conv_w.5's weight and bias at SAN's scale."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    return (rand(n, hidden, h, w).relu(), rand(n, c, h, w), rand(cw * k * k, hidden) / hidden ** 0.5,
            rand(cw * k * k) * 0.1)


@pytest.mark.parametrize("shape", PATCHWISE_SHAPES, ids=str)
def test_patchwise_float64_equals_definition_on_every_isa(shape, every_isa):
    *sizes, k, d = shape
    assert_float64_equals_definition(L.san_patchwise, reference.san_patchwise, make_patchwise_inputs(*sizes, k), k, d,
                                     every_isa)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_patchwise_low_precision_against_float64(dtype, every_isa):
    *sizes, k, d = PATCHWISE_SHAPES[5]
    inputs = make_patchwise_inputs(*sizes, k, dtype=dtype)
    expected, tol = assert_low_precision_close(L.san_patchwise, reference.san_patchwise, inputs, k, d, every_isa)
    mixed = [t.to(dtype) if i < 2 else t.float() for i, t in enumerate(inputs)]  # autocast: float32 parameters
    assert max_error(L.san_patchwise(*mixed, k, d), expected) < tol


def test_patchwise_gradcheck_float64():
    inputs = tuple(t.requires_grad_() for t in make_patchwise_inputs(1, 2, 2, 4, 4, 5, 3))
    assert torch.autograd.gradcheck(lambda *a: L.san_patchwise(*a, 3, 1), inputs, fast_mode=True)


@pytest.mark.parametrize("index,value,error,match", [
    (1, torch.zeros(2, 8, 5, 7, dtype=torch.float64), ValueError, "value must have shape"),
    (1, torch.zeros(2, 8, 5, 6, dtype=torch.float32), TypeError, "value has dtype torch.float32"),
    (1, torch.zeros(2, 7, 5, 6, dtype=torch.float64), ValueError, "C_w dividing the value channels C=7"),
    (2, torch.zeros(17, 2, dtype=torch.float64), ValueError, "weight5 must have C_w\\*K\\*K rows"),
    (2, torch.zeros(18, 3, dtype=torch.float64), ValueError, "weight5 must have shape"),
    (3, torch.zeros(9, dtype=torch.float64), ValueError, "bias5 must have shape"),
], ids=["value-shape", "value-dtype", "groups", "weight5-rows", "weight5-shape", "bias5"])
def test_patchwise_bad_inputs_name_the_argument(index, value, error, match):
    inputs = replace(make_patchwise_inputs(2, 2, 2, 8, 5, 6, 3), index, value)
    with pytest.raises(error, match=match):
        L.san_patchwise(*inputs, 3, 1)


def test_patchwise_small_map_rejected_by_the_op_itself():
    with pytest.raises(ValueError, match="reflect padding 3 needs a map of at least 4x4"):
        ops.san_patchwise(*make_patchwise_inputs(1, 2, 1, 2, 3, 8, 7), 7, 1)


# ------------------------------------------------------------------------------------ both fused ops
FUSED_OPS = {  # name: (public function, reference, inputs(dtype) of a small case, kernel size, dilation)
    "pairwise": (L.san_pairwise, reference.san_pairwise, lambda dtype: make_inputs(1, 3, 5, 2, 4, 9, 19, dtype), 5, 2),
    "patchwise": (L.san_patchwise, reference.san_patchwise,
                  lambda dtype: make_patchwise_inputs(1, 3, 2, 4, 9, 19, 5, dtype), 5, 2),
}


@pytest.mark.parametrize("name", FUSED_OPS)
def test_gradients_equal_definition_autograd(name):
    fn, definition, inputs, k, d = FUSED_OPS[name]
    leaves = [t.requires_grad_() for t in inputs(torch.float64)]
    copies = [t.detach().clone().requires_grad_() for t in leaves]
    out = fn(*leaves, k, d)
    grad = torch.randn_like(out)
    out.backward(grad)
    definition(*copies, k, d).backward(grad)
    for i, (ours, expected) in enumerate(zip(leaves, copies)):
        torch.testing.assert_close(ours.grad, expected.grad, rtol=1e-9, atol=1e-9, msg=f"input {i}")


@pytest.mark.parametrize("name", FUSED_OPS)
def test_opcheck_and_torch_compile_fullgraph(name):
    fn, _, inputs, k, d = FUSED_OPS[name]
    leaves = tuple(t.requires_grad_() for t in inputs(torch.float64))
    result = torch.library.opcheck(getattr(ops, fn.__name__), (*leaves, k, d))
    assert set(result.values()) == {"SUCCESS"}, result
    compiled = torch.compile(lambda *a: fn(*a, k, d) * 2, fullgraph=True, backend="aot_eager")
    single = inputs(torch.float32)
    torch.testing.assert_close(compiled(*single), fn(*single, k, d) * 2)


@pytest.mark.parametrize("name", FUSED_OPS)
def test_deterministic_for_any_thread_count(name):
    fn, _, _, _, _ = FUSED_OPS[name]
    inputs = (make_inputs(2, 8, 8, 4, 16, 9, 40, dtype=torch.float32) if name == "pairwise" else
              make_patchwise_inputs(2, 8, 8, 16, 9, 40, 7, dtype=torch.float32))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = fn(*inputs, 7, 1)
        torch.set_num_threads(2)
        assert torch.equal(fn(*inputs, 7, 1), single)
        assert torch.equal(fn(*inputs, 7, 1), single)
    finally:
        torch.set_num_threads(threads)
