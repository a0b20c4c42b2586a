"""XResNet ± SimpleSelfAttention, the SAGAN layer and the spectral norm (spec simple_self_attention.md)."""
import pytest
import timm
import torch
import torch.nn as nn

import localattn.cls  # noqa: F401  (registers the timm models)
from localattn.convert import CheckpointMismatchError
from localattn.layers import SelfAttention, SimpleSelfAttention, SpectralNormConv1d
from localattn.models import XResNet

PARAMS_10_CLASSES = {18: (11_228_586, 4_097), 34: (21_336_746, 4_097), 50: (23_575_466, 65_537),
                     101: (42_567_594, 65_537), 152: (58_211_242, 65_537)}  # spec §3 and §1


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth", list(PARAMS_10_CLASSES))
def test_parameter_counts_match_spec(depth):
    plain, sa_extra = PARAMS_10_CLASSES[depth]
    with torch.device("meta"):
        assert count(timm.create_model(f"xresnet{depth}", num_classes=10)) == plain
        assert count(timm.create_model(f"xresnet{depth}_ssa", num_classes=10)) == plain + sa_extra


def test_attention_position_and_init():
    model = timm.create_model("xresnet50_ssa", num_classes=10)
    layers = [n for n, m in model.named_modules() if isinstance(m, SimpleSelfAttention)]
    assert layers == ["layers.0.2.sa"] and model.layers[0][2].sa.n_in == 256
    assert model.layers[0][2].sa.gamma.item() == 0.0
    assert all(block.convs[-1][1].weight.abs().sum().item() == 0 for stage in model.layers for block in stage)


def to_fastai_keys(state_dict):
    """Our layout -> fastai's Sequential indices (stem 0-2, stages 4-7, head 10), the inverse of the converter."""
    def key(k):
        head, _, rest = k.partition(".")
        if head == "stem":
            return k[len("stem."):]
        if head == "layers":
            index, _, rest = rest.partition(".")
            return f"{int(index) + 4}.{rest}"
        return f"10.{rest}"
    return {key(k): v for k, v in state_dict.items()}


def test_fastai_checkpoint_loads_strictly_and_wrong_arch_fails(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("xresnet18_ssa", num_classes=10)
    fastai = to_fastai_keys(source.state_dict())
    assert len(fastai) == 138  # spec §3 (xresnet18 + SA)
    assert fastai["4.1.sa.conv.weight_orig"].shape == (64, 64, 1) and fastai["10.weight"].shape == (10, 512)
    assert "5.0.idconv.0.weight" in fastai and fastai["0.0.weight"].shape == (32, 3, 3, 3)
    path = tmp_path / "xresnet18_sa.pth"
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in fastai.items()}}, path)
    model = timm.create_model("xresnet18_ssa", num_classes=10, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    for k, v in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v.half().float() if v.is_floating_point() else v, msg=k)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(4\): layers\.0\.1\.sa\."):
        timm.create_model("xresnet18", num_classes=10, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    with pytest.raises(CheckpointMismatchError):
        XResNet(34, sa=True, num_classes=10, pretrained=str(path))


def test_spectral_norm_matches_torch():
    torch.manual_seed(0)
    ours = SpectralNormConv1d(6, 5).train()
    theirs = torch.nn.utils.spectral_norm(nn.Conv1d(6, 5, 1, bias=False))
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 7)
    for _ in range(3):
        torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.weight_u, theirs.weight_u)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x))


def direct_simple_self_attention(x, weight, gamma):
    """out_j = x_j + gamma Σ_i (x_iᵀ W x_j) x_i with the N×N map materialised (the v0.1 association)."""
    flat = x.flatten(2)
    scores = torch.einsum("bci,cd,bdj->bij", flat, weight, flat)
    return (flat + gamma * torch.einsum("bci,bij->bcj", flat, scores)).view_as(x)


@pytest.mark.parametrize("sym", [False, True])
def test_simple_self_attention_formula(sym):
    torch.manual_seed(0)
    layer = SimpleSelfAttention(8, sym=sym).double()
    layer.gamma.data.fill_(0.3)
    reference = torch.nn.utils.spectral_norm(nn.Conv1d(8, 8, 1, bias=False)).double().eval()
    reference.load_state_dict(layer.conv.state_dict())
    layer.eval()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)  # exact formula: compared in float64
    reference(x.flatten(2))  # the hook computes reference.weight from weight_orig, u, v
    weight = reference.weight.detach()[..., 0]
    if sym:
        weight = (weight + weight.t()) / 2
    torch.testing.assert_close(layer(x), direct_simple_self_attention(x, weight, 0.3), atol=1e-10, rtol=1e-10)


def test_sym_is_really_symmetric_and_trains():
    torch.manual_seed(0)
    layer = SimpleSelfAttention(8, sym=True).train()
    layer.gamma.data.fill_(0.5)
    effective = layer.effective_weight()[..., 0]
    torch.testing.assert_close(effective, effective.t(), atol=0, rtol=0)
    x = torch.randn(2, 8, 4, 4)
    layer(x).square().sum().backward()
    assert layer.conv.weight_orig.grad.abs().sum() > 0 and layer.gamma.grad.abs() > 0
    plain = SimpleSelfAttention(8, sym=False).eval()
    plain.load_state_dict(layer.state_dict())
    assert not torch.allclose(plain(x), layer.eval()(x))  # sym changes the function (the original's was a no-op)


def test_sagan_self_attention_formula():
    torch.manual_seed(0)
    layer = SelfAttention(16).double()
    layer.gamma.data.fill_(0.7)
    layer.eval()
    x = torch.randn(2, 16, 3, 5, dtype=torch.float64)  # exact formula: compared in float64 (fp32 differs by ~2e-5)
    flat = x.flatten(2)
    wq, wk, wv = (m.normalized_weight()[..., 0] for m in (layer.query, layer.key, layer.value))
    f, g, h = wq @ flat, wk @ flat, wv @ flat
    beta = torch.softmax(torch.einsum("bki,bkj->bij", f, g), dim=1)  # normalised over i for each j
    expected = flat + 0.7 * torch.einsum("bci,bij->bcj", h, beta)
    torch.testing.assert_close(layer(x), expected.view_as(x), atol=1e-10, rtol=1e-10)
    assert count(layer) == 5 * 16 * 16 // 4 + 1  # (5/4)C² + 1


def test_ssa_is_identity_at_init_and_features_only():
    torch.manual_seed(0)
    plain, with_sa = XResNet(18, num_classes=10).eval(), XResNet(18, sa=True, num_classes=10).eval()
    with_sa.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(with_sa(x), plain(x))
    features = timm.create_model("xresnet18_ssa", features_only=True).eval()
    assert features.feature_info.channels() == [64, 64, 128, 256, 512]
    assert features.feature_info.reduction() == [2, 4, 8, 16, 32]
    dense = XResNet(18, sa=True, num_classes=0, out_indices=(1, 2, 3, 4)).eval()
    dense.load_state_dict(features.model.state_dict())
    with torch.no_grad():
        maps, dense_maps = features(x), dense(x)
    assert [tuple(m.shape) for m in maps] == [(1, 64, 32, 48), (1, 64, 16, 24), (1, 128, 8, 12), (1, 256, 4, 6),
                                              (1, 512, 2, 3)]
    for a, b in zip(maps[1:], dense_maps):
        torch.testing.assert_close(a, b)


def test_checkpointing_frozen_stages_and_head_api():
    torch.manual_seed(0)
    model = XResNet(18, sa=True, num_classes=4, frozen_stages=1).train()
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not any(p.requires_grad for p in model.layers[0].parameters()) and not model.layers[0].training
    assert all(p.requires_grad for p in model.layers[1].parameters())
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for with_cp in (False, True):
        model.set_grad_checkpointing(with_cp)
        model.zero_grad()
        model(x).logsumexp(1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)
    model.reset_classifier(7)
    assert model.eval()(x).shape == (2, 7) and model.group_matcher(coarse=True)["blocks"] == r"^layers\.(\d+)"
