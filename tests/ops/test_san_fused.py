"""Fused SAN pairwise attention `localattn.ops.san_pairwise` (issue 10 items 2-3): parity with the pure-PyTorch
definition on every compiled ISA path, float64 gradcheck, opcheck, torch.compile(fullgraph=True), determinism,
bad inputs; and the SAM layer: fused inference equals the published (unfused) layer graph, autocast-safe dtypes."""
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


def compiled_isas():
    """Every ISA path this CPU can run (the op caps the requested ISA at what the CPU has)."""
    available = []
    for isa in ("baseline", "avx2", "avx512"):
        got = ops._set_cpu_isa(isa)
        if got not in available:
            available.append(got)
    return available


@pytest.fixture
def every_isa():
    isas = compiled_isas()
    yield isas
    ops._set_cpu_isa("avx512")  # back to the best one the CPU has


def test_isa_detection_reports_a_known_path(every_isa):
    assert ops._cpu_isa() in ("baseline", "avx2", "avx512")
    assert every_isa[0] == "baseline" and every_isa[-1] == ops._cpu_isa()
    with pytest.raises(ValueError, match="isa must be one of"):
        ops._set_cpu_isa("sse9")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float64_equals_definition_on_every_isa(shape, every_isa):
    *sizes, k, d = shape
    inputs = make_inputs(*sizes)
    expected = reference.san_pairwise(*inputs, k, d)
    for isa in every_isa:
        ops._set_cpu_isa(isa)
        torch.testing.assert_close(L.san_pairwise(*inputs, k, d), expected, rtol=1e-10, atol=1e-10, msg=isa)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_against_float64(dtype, every_isa):
    *sizes, k, d = SHAPES[3]
    inputs = make_inputs(*sizes, dtype=dtype)
    expected = reference.san_pairwise(*(t.double() for t in inputs), k, d)
    tol = 1e-5 if dtype == torch.float32 else LOW_PRECISION_TOL[dtype]
    for isa in every_isa:
        ops._set_cpu_isa(isa)
        out = L.san_pairwise(*inputs, k, d)
        assert out.dtype == dtype and max_error(out, expected) < tol, isa


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


def test_gradients_equal_definition_autograd():
    *sizes, k, d = SHAPES[1]
    leaves = [t.requires_grad_() for t in make_inputs(*sizes)]
    copies = [t.detach().clone().requires_grad_() for t in leaves]
    grad = torch.randn(sizes[0], sizes[4], sizes[5], sizes[6], dtype=torch.float64)
    L.san_pairwise(*leaves, k, d).backward(grad)
    reference.san_pairwise(*copies, k, d).backward(grad)
    for i, (ours, expected) in enumerate(zip(leaves, copies)):
        torch.testing.assert_close(ours.grad, expected.grad, rtol=1e-9, atol=1e-9, msg=f"input {i}")


def test_opcheck():
    inputs = tuple(t.requires_grad_() for t in make_inputs(2, 2, 3, 1, 2, 4, 4))
    result = torch.library.opcheck(ops.san_pairwise, (*inputs, 3, 1))
    assert set(result.values()) == {"SUCCESS"}, result


def test_torch_compile_fullgraph():
    inputs = make_inputs(2, 4, 4, 2, 8, 6, 7, dtype=torch.float32)
    compiled = torch.compile(lambda *a: L.san_pairwise(*a, 3, 1) * 2, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*inputs), L.san_pairwise(*inputs, 3, 1) * 2)


def test_deterministic_for_any_thread_count():
    inputs = make_inputs(2, 8, 8, 4, 16, 9, 40, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = L.san_pairwise(*inputs, 7, 1)
        torch.set_num_threads(2)
        assert torch.equal(L.san_pairwise(*inputs, 7, 1), single)
        assert torch.equal(L.san_pairwise(*inputs, 7, 1), single)
    finally:
        torch.set_num_threads(threads)


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
        assert sam.uses_fused_pairwise(x)
        fused = sam(x)
        monkeypatch.setattr(san_layers, "inference_fast_path", lambda: False)
        assert not sam.uses_fused_pairwise(x)
        torch.testing.assert_close(fused, sam(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (7, 1), (5, 2)])
def test_sam_patchwise_folded_inference_equals_published_graph(kernel_size, dilation, per_row, monkeypatch):
    """Patchwise inference (BatchNorms folded, patch features in one pass, the whole window or one window row at
    a time) against the published graph in float64."""
    sam, x = pairwise_sam(kernel_size, "patchwise", dilation).double(), torch.randn(2, 32, 11, 13, dtype=torch.float64)
    if per_row:
        monkeypatch.setattr(san_layers, "PATCH_CHUNK_BYTES", 0)
    calls = []
    monkeypatch.setattr(torch.nn.functional, "unfold", lambda *a, **k: calls.append(1) or unfold(*a, **k))
    with torch.no_grad():
        folded = sam(x)
        assert not calls  # the patch tensor is not built
        monkeypatch.setattr(san_layers, "inference_fast_path", lambda: False)
        published = sam(x)
    assert calls
    torch.testing.assert_close(folded, published, rtol=0, atol=1e-12)


def test_sam_keeps_published_graph_for_training_and_gradients():
    sam, x = pairwise_sam(), torch.randn(1, 32, 8, 8)
    assert not sam.uses_fused_pairwise(x)  # autograd on
    with torch.no_grad():
        assert not sam.train().uses_fused_pairwise(x)  # batch statistics


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
