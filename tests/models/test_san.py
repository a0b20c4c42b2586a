"""SAN10/15/19: exact sizes, official checkpoint layout, SAM maths, compiled vs reference ops (spec san.md §2, §4)."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F

import localattn.cls  # noqa: F401  (registers the timm models)
from localattn import ops
from localattn.convert import CheckpointMismatchError
from localattn.layers import SAM
import localattn.layers.san as san_layers
from localattn.layers.san import MaxPool2x2, PointwiseConv2d, pointwise_conv_bn_relu_pool
from localattn.models import SAN
from localattn.models.san import convert_san
from localattn.ops import reference

PARAMS = {  # spec §4.2
    ("pairwise", 10): 10_531_848, ("patchwise", 10): 11_841_124,
    ("pairwise", 15): 14_065_436, ("patchwise", 15): 16_181_310,
    ("pairwise", 19): 17_596_156, ("patchwise", 19): 20_518_470,
}
LAYERS = {10: (2, 1, 2, 4, 1), 15: (3, 2, 3, 5, 2), 19: (3, 3, 4, 6, 3)}
MINI = (1, 1, 1, 1, 1)  # one block per stage: every stage, kernel size and width, at a fraction of the cost


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("sa_type,depth", list(PARAMS))
def test_parameter_counts_match_spec(sa_type, depth):
    with torch.device("meta"):
        assert count(timm.create_model(f"san{depth}_{sa_type}")) == PARAMS[sa_type, depth]


def official_state_dict(sa_type, depth, gen):
    """SAN state dict written from the spec's module table (§2.2–§2.5), random values, official key names."""
    sd = {}

    def bn(name, c):
        sd.update({f"{name}.weight": torch.rand(c, generator=gen) + 0.5, f"{name}.bias": torch.randn(c, generator=gen),
                   f"{name}.running_mean": torch.randn(c, generator=gen) * 0.1,
                   f"{name}.running_var": torch.rand(c, generator=gen) + 0.5,
                   f"{name}.num_batches_tracked": torch.tensor(1000)})

    def conv(name, cin, cout, bias):
        sd[f"{name}.weight"] = torch.randn(cout, cin, 1, 1, generator=gen) / cin ** 0.5
        if bias:
            sd[f"{name}.bias"] = torch.randn(cout, generator=gen) * 0.1

    conv("conv_in", 3, 64, False)
    bn("bn_in", 64)
    previous = 64
    for i, (c, k) in enumerate(zip((64, 256, 512, 1024, 2048), (3, 7, 7, 7, 7))):
        conv(f"conv{i}", previous, c, False)
        bn(f"bn{i}", c)
        previous, rel, mid, taps = c, c // 16, c // 4, k * k
        cw = mid // 8
        for b in range(LAYERS[depth][i]):
            p = f"layer{i}.{b}"
            bn(f"{p}.bn1", c)
            conv(f"{p}.sam.conv1", c, rel, True)
            conv(f"{p}.sam.conv2", c, rel, True)
            conv(f"{p}.sam.conv3", c, mid, True)
            if sa_type == "pairwise":
                bn(f"{p}.sam.conv_w.0", rel + 2)
                conv(f"{p}.sam.conv_w.2", rel + 2, rel, False)
                bn(f"{p}.sam.conv_w.3", rel)
                conv(f"{p}.sam.conv_w.5", rel, cw, True)
                conv(f"{p}.sam.conv_p", 2, 2, True)
            else:
                bn(f"{p}.sam.conv_w.0", rel * (taps + 1))
                conv(f"{p}.sam.conv_w.2", rel * (taps + 1), cw, False)
                bn(f"{p}.sam.conv_w.3", cw)
                conv(f"{p}.sam.conv_w.5", cw, taps * cw, True)
            bn(f"{p}.bn2", mid)
            conv(f"{p}.conv", mid, c, True)
    sd["fc.weight"] = torch.randn(1000, 2048, generator=gen) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


@pytest.fixture(scope="module")
def official_san10_pairwise(tmp_path_factory):
    """An official-format checkpoint file: train.py's container, DDP `module.` prefix (spec §2.5)."""
    sd = official_state_dict("pairwise", 10, torch.Generator().manual_seed(0))
    assert len(sd) == 368  # spec §2.5
    path = tmp_path_factory.mktemp("san") / "model_best.pth"
    torch.save({"epoch": 100, "state_dict": {f"module.{k}": v for k, v in sd.items()}, "top1_val": 0.749,
                "top5_val": 0.921}, path)
    return sd, path


def test_official_checkpoint_loads_strictly_through_timm(official_san10_pairwise):
    sd, path = official_san10_pairwise
    model = timm.create_model("san10_pairwise", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    ours, official = model.state_dict(), convert_san(sd)
    assert set(ours) == set(official) and len(official) == len(sd)  # one-to-one key map
    assert all(torch.equal(ours[k], v) for k, v in official.items())


def test_official_checkpoint_loads_through_converter_as_dense_backbone(official_san10_pairwise):
    sd, path = official_san10_pairwise
    backbone = SAN("pairwise", 10, num_classes=0, out_indices=(1, 2, 3, 4), pretrained=str(path))
    assert torch.equal(backbone.state_dict()["layers.4.blocks.0.sam.conv_w.5.weight"], sd["layer4.0.sam.conv_w.5.weight"])


@pytest.mark.parametrize("wrong", ["san10_patchwise", "san15_pairwise"])
def test_wrong_architecture_fails_loudly(official_san10_pairwise, wrong):
    _, path = official_san10_pairwise
    with pytest.raises(CheckpointMismatchError, match="missing keys|unexpected keys|shape mismatches"):
        timm.create_model(wrong, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    with pytest.raises(CheckpointMismatchError):
        SAN(wrong.split("_")[1], int(wrong[3:5]), pretrained=str(path))


def neighbours(x, k, pad):
    """Independent neighbour gather: reflect-pad then slice; (N, C, K², H, W) with t = a·k + b."""
    padded = F.pad(x, [pad] * 4, mode="reflect")
    h, w = x.shape[-2:]
    return torch.stack([padded[:, :, a:a + h, b:b + w] for a in range(k) for b in range(k)], 2)


def sam_by_hand(sam, x):
    """SAM forward written directly from spec §2.4 (slices instead of the ops, c mod C_w sharing by repeat)."""
    k, pad = sam.kernel_size, sam.padding
    n, _, h, w = x.shape
    x1, x2, x3 = sam.conv1(x), sam.conv2(x), sam.conv3(x)
    if sam.sa_type == 0:
        rows, cols = torch.linspace(-1, 1, h, dtype=x.dtype), torch.linspace(-1, 1, w, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij")[::-1])
        pe = sam.conv_p(grid.unsqueeze(0))
        relation = x1.unsqueeze(2) - neighbours(x2, k, pad)
        position = (pe.unsqueeze(2) - neighbours(pe, k, pad)).expand(n, -1, -1, -1, -1)
        weights = torch.cat([relation, position], 1).flatten(3)
        weights = torch.softmax(sam.conv_w(weights), dim=2)
    else:
        patch = neighbours(x2, k, pad).reshape(n, -1, 1, h * w)
        weights = sam.conv_w(torch.cat([x1.reshape(n, -1, 1, h * w), patch], 1)).view(n, -1, k * k, h * w)
    weights = weights.view(n, -1, k * k, h, w).repeat(1, x3.shape[1] // weights.shape[1], 1, 1, 1)
    return (weights * neighbours(x3, k, pad)).sum(2)


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_sam_matches_independent_recomputation(sa_type, kernel_size):
    torch.manual_seed(0)
    sam = SAM(sa_type, in_planes=16, rel_planes=4, out_planes=16, share_planes=4,
              kernel_size=kernel_size).double().eval()
    for bn in (sam.conv_w[0], sam.conv_w[3]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64)  # exact formula: compared in float64
    with torch.no_grad():
        torch.testing.assert_close(sam(x), sam_by_hand(sam, x), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 2, 7, 6), (1, 2, 6, 9)])
def test_max_pool_2x2_equals_max_pool2d(shape):
    torch.manual_seed(0)
    x = torch.relu(torch.randn(shape))
    x[0, 0, 0, :2] = float("nan")
    pool = MaxPool2x2()
    with torch.no_grad():
        torch.testing.assert_close(pool(x), F.max_pool2d(x, 2, 2), rtol=0, atol=0, equal_nan=True)
    x.requires_grad_()
    pool(x).nansum().backward()
    expected = x.detach().clone().requires_grad_()
    F.max_pool2d(expected, 2, 2).nansum().backward()
    assert torch.equal(x.grad, expected.grad)


class OpNames(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the names of the aten ops run while active."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_onednn_1x1_rule_holds_on_amd_avx512_cpus_only():
    """MKL's sgemm is slower than oneDNN's 1x1 convolution on AMD AVX-512 CPUs only (benchmarks/pointwise.py)."""
    assert san_layers.onednn_1x1_outruns_mkl("AVX512", "AuthenticAMD")
    assert not san_layers.onednn_1x1_outruns_mkl("AVX512", "GenuineIntel")
    assert not san_layers.onednn_1x1_outruns_mkl("AVX2", "AuthenticAMD")
    assert not san_layers.onednn_1x1_outruns_mkl("AVX512", "")


@pytest.mark.parametrize("amd_avx512", [True, False])
def test_pointwise_conv_takes_onednn_only_for_small_deep_maps_on_avx512(amd_avx512, monkeypatch):
    """1x1 convs of batches of small deep maps run as oneDNN's convolution on AMD AVX-512 CPUs (any CI machine:
    the CPU flag is patched), everything else as per-image GEMMs; both equal the float64 product, gradients too."""
    monkeypatch.setattr(san_layers, "ONEDNN_1X1_OUTRUNS_MKL", amd_avx512)
    picks = san_layers.onednn_is_faster
    assert picks(torch.empty(2, 128, 7, 7), 32) == amd_avx512
    assert picks(torch.empty(2, 256, 28, 28), 512) == amd_avx512
    for x, out in [(torch.empty(1, 128, 7, 7), 32), (torch.empty(2, 64, 7, 7), 32), (torch.empty(2, 128, 7, 7), 16),
                   (torch.empty(2, 128, 29, 28), 32), (torch.empty(2, 128, 7, 7, dtype=torch.float64), 32),
                   (torch.empty(2, 1600, 1, 784), 16)]:
        assert not picks(x, out), (x.shape, x.dtype, out)
    assert not torch.jit.trace(lambda x: torch.tensor(picks(x, 32)), torch.empty(2, 128, 7, 7), check_trace=False)(
        torch.empty(2, 128, 7, 7))

    torch.manual_seed(0)
    x, weight, bias = torch.randn(3, 128, 5, 6), torch.randn(40, 128, 1, 1) / 8, torch.randn(40)
    expected = torch.einsum("nchw,oc->nohw", x.double(), weight.double().flatten(1)) + bias.double().view(1, -1, 1, 1)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    with OpNames() as seen:
        out = san_layers.pointwise_conv2d(*leaves)
    assert ("convolution" in seen.names) == amd_avx512 and ("baddbmm" in seen.names) != amd_avx512, seen.names
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn(out.shape)
    out.backward(grad)
    reference_leaves = [t.double().requires_grad_() for t in (x, weight, bias)]
    (torch.einsum("nchw,oc->nohw", reference_leaves[0], reference_leaves[1].flatten(1))
     + reference_leaves[2].view(1, -1, 1, 1)).backward(grad.double())
    for leaf, reference_leaf in zip(leaves, reference_leaves):
        torch.testing.assert_close(leaf.grad.double(), reference_leaf.grad, rtol=1e-5, atol=1e-4)


class LargestOutput(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest number of elements any op returns while active."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("shape", [(3, 2, 12, 10), (2, 2, 13, 9)])
def test_stem_pool_folds_inference_batchnorm_without_the_full_map(shape, monkeypatch):
    """SAN's stem + first pool, max-pool(relu(bn(conv))): at inference BatchNorm folded and pooled per band of rows
    (here 2 rows: several bands; odd sizes drop the last row / column as max_pool2d does), no op output as large as
    half the full-resolution map; with autograd on or BatchNorm training, the published graph (same running stats)."""
    torch.manual_seed(0)
    conv, bn = PointwiseConv2d(2, 5, bias=True).double(), torch.nn.BatchNorm2d(5).double()  # exact fold: float64
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(-1.5, 1.5)  # negative scales too: they are inside the pooled matmul
    bn.bias.data.uniform_(-1, 1)
    x = torch.randn(shape, dtype=torch.float64)
    monkeypatch.setattr(san_layers, "POOLED_BAND_BYTES", 1)
    n, _, h, w = shape
    for mode, autograd in ((bn.eval, False), (bn.eval, True), (bn.train, False)):
        mode()
        bn_copy = torch.nn.BatchNorm2d(5).double().train(bn.training)
        bn_copy.load_state_dict(bn.state_dict())
        largest = LargestOutput()
        with torch.set_grad_enabled(autograd), largest:
            fused = pointwise_conv_bn_relu_pool(conv, bn, MaxPool2x2(), x)
        published = F.max_pool2d(torch.relu(bn_copy(conv(x))), 2, 2)
        torch.testing.assert_close(fused, published, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(bn.running_var, bn_copy.running_var, atol=0, rtol=0)
        if not (autograd or bn.training):
            assert largest.numel < n * 5 * h * w // 2


@pytest.mark.parametrize("shape", [(3, 2, 12, 10), (2, 2, 13, 9)])
def test_stem_pool_trains_batchnorm_without_the_full_map(shape, monkeypatch):
    """The stem + first pool in training (BatchNorm with batch statistics, bias-free conv): the statistics from the
    input's moments, pooled per band, the backward from the gradient at each window's maximum; no op output as
    large as half the full map, forward and backward. Output, the gradients of conv / BatchNorm parameters and the
    running statistics (momentum, then the cumulative average) equal the published graph's, float64, two steps."""
    torch.manual_seed(0)
    conv, bn = PointwiseConv2d(2, 5, bias=False).double(), torch.nn.BatchNorm2d(5).double()
    bn.weight.data.uniform_(-1.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    conv_copy, bn_copy = copy.deepcopy(conv), copy.deepcopy(bn)
    monkeypatch.setattr(san_layers, "SLOTTED_BAND_BYTES", 1)
    n, _, h, w = shape
    for momentum in (0.1, None):
        bn.momentum = bn_copy.momentum = momentum
        x = torch.randn(shape, dtype=torch.float64)
        largest = LargestOutput()
        with largest:
            fused = pointwise_conv_bn_relu_pool(conv, bn, MaxPool2x2(), x)
            grad = torch.randn_like(fused)
            fused.backward(grad)
        published = F.max_pool2d(torch.relu(bn_copy(conv_copy(x))), 2, 2)
        published.backward(grad)
        assert largest.numel < n * 5 * h * w // 2
        torch.testing.assert_close(fused, published, atol=1e-12, rtol=1e-12)
        for ours, theirs in ((conv.weight.grad, conv_copy.weight.grad), (bn.weight.grad, bn_copy.weight.grad),
                             (bn.bias.grad, bn_copy.bias.grad), (bn.running_mean, bn_copy.running_mean),
                             (bn.running_var, bn_copy.running_var)):
            torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=1e-12)
        assert bn.num_batches_tracked == bn_copy.num_batches_tracked


def test_stem_pool_training_keeps_published_graph_where_it_cannot_fold():
    """An input that takes a gradient, SyncBatchNorm (statistics across ranks) or a conv bias: the published graph."""
    conv, bn = PointwiseConv2d(2, 5, bias=False), torch.nn.BatchNorm2d(5)
    x = torch.randn(2, 2, 8, 8, requires_grad=True)
    pointwise_conv_bn_relu_pool(conv, bn, MaxPool2x2(), x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not san_layers.trains_stem_pooled(conv, torch.nn.SyncBatchNorm(5), x.detach())
    assert not san_layers.trains_stem_pooled(PointwiseConv2d(2, 5, bias=True), bn, x.detach())
    assert san_layers.trains_stem_pooled(conv, bn, x.detach())


def test_reflect_limit_gives_clear_error():
    with pytest.raises(ValueError, match="at least 128x128"):
        SAN("pairwise", 10)(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="at least 4x4"):
        SAM("pairwise", 8, 2, 8, 4, kernel_size=7)(torch.randn(1, 8, 3, 5))


@pytest.fixture()
def reference_ops(monkeypatch):
    """Route localattn.ops through the pure-PyTorch reference for the duration of a test."""
    def use():
        for name in ("aggregation", "subtraction", "subtraction2", "san_pairwise"):
            monkeypatch.setattr(ops, name, getattr(reference, name))
    return use


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_forward_equals_reference_op_build(sa_type, reference_ops):
    torch.manual_seed(0)
    model = SAN(sa_type, layers=MINI).double().eval()  # two exact implementations: compared in float64
    x = torch.randn(1, 3, 128, 160, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        reference_ops()
        expected = model(x)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


def test_backward_and_checkpointing_give_the_same_gradients():
    torch.manual_seed(0)
    model = SAN("patchwise", layers=MINI, num_classes=10).train()
    x = torch.randn(1, 3, 128, 128)
    grads = []
    for with_cp in (False, True):
        model.set_grad_checkpointing(with_cp)
        model.zero_grad()
        model(x).logsumexp(1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert all(torch.isfinite(g).all() for g in grads[0].values())
    assert grads[0]["layers.4.blocks.0.sam.conv_w.5.weight"].abs().sum() > 0 and grads[0]["conv_in.weight"].abs().sum() > 0
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-4, rtol=1e-3, msg=name)


def test_features_only_and_dense_mode():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 128, 192)
    features = timm.create_model("san10_pairwise", layers=MINI, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert features.feature_info.channels() == [256, 512, 1024, 2048]
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    dense = SAN("pairwise", layers=MINI, num_classes=0, out_indices=(1, 2, 3, 4)).eval()
    dense.load_state_dict(features.model.state_dict())
    with torch.no_grad():
        maps, dense_maps = features(x), dense(x)
    assert [tuple(m.shape) for m in maps] == [(1, 256, 32, 48), (1, 512, 16, 24), (1, 1024, 8, 12), (1, 2048, 4, 6)]
    for a, b in zip(maps, dense_maps):
        torch.testing.assert_close(a, b)


def test_timm_classifier_api():
    model = timm.create_model("san10_patchwise", layers=MINI, num_classes=5).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=[0, 4])
        assert [t.shape[1] for t in inter] == [64, 2048] and torch.equal(final, inter[-1])
        logits = model.forward_head(final)
        torch.testing.assert_close(model(x), logits)
        model.reset_classifier(0)
        assert logits.shape == (1, 5) and model.forward_head(final).shape == (1, 2048)
    assert model.group_matcher()["stem"] and model.no_weight_decay() == set()


def test_frozen_stages_and_norm_eval():
    model = SAN("pairwise", 10, num_classes=0, out_indices=(1, 2, 3, 4), frozen_stages=2, norm_eval=True).train()
    frozen = ("conv_in", "bn_in", "layers.0", "layers.1")
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(tuple(f"{f}." for f in frozen))), name
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert model.layers[2].training
