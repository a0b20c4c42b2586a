"""ELSA-Swin-T/S/B: exact sizes, official checkpoint layout, conversion, timm API, dense backbone (elsa.md §3, §5.1)."""
import copy
import math

import pytest
import timm
import torch
from timm.models._manipulate import group_parameters
from timm.models.swin_transformer import get_relative_position_index

import localattn.cls  # noqa: F401  (registers the timm models)
from localattn import ops
from localattn.convert import CheckpointMismatchError, load_pretrained
from localattn.models import ELSASwin, ELSASwinTransformer
from localattn.models.elsa_swin import elsa_attention_keys
from localattn.ops import reference

TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), group_width=4)
SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), group_width=8)
BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), group_width=8)
MINI = dict(embed_dim=32, depths=(1, 1, 1, 2), num_heads=(1, 2, 4, 8), group_width=4)  # same structure, fast


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ELSASwinTransformer(**TINY).eval()


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch,expected", [(TINY, 29_140_978), (SMALL, 52_874_626), (BASE, 92_682_464)])
def test_classifier_parameter_counts(arch, expected):
    with torch.device("meta"):
        assert count(ELSASwinTransformer(**arch)) == expected


def test_dense_backbone_parameter_count():
    with torch.device("meta"):
        assert count(ELSASwin(**TINY)) == 28_373_322


def official_tiny_state_dict():
    """ELSA-Swin-T state dict written from the spec's key list (§3.6) and shapes (§2.1, §3.1, §3.2), random values."""
    gen = torch.Generator().manual_seed(0)
    sd = {}

    def put(name, *shape):
        sd[name] = torch.randn(*shape, generator=gen) * 0.02

    def norm(name, c):
        put(f"{name}.weight", c)
        put(f"{name}.bias", c)

    def linear(name, cout, cin, *kernel, bias=True):
        put(f"{name}.weight", cout, cin, *kernel)
        if bias:
            put(f"{name}.bias", cout)

    linear("patch_embed.proj", 96, 3, 4, 4)
    norm("patch_embed.norm", 96)
    for i, (depth, heads) in enumerate(zip((2, 2, 6, 2), (3, 6, 12, 24))):
        c = 96 * 2 ** i
        for j in range(depth):
            blk = f"layers.{i}.blocks.{j}"
            norm(f"{blk}.norm1", c)
            norm(f"{blk}.norm2", c)
            linear(f"{blk}.mlp.fc1", 4 * c, c)
            linear(f"{blk}.mlp.fc2", c, 4 * c)
            linear(f"{blk}.attn.post_proj", c, c)
            if i < 3:
                dqk = math.ceil(c // 3 * 2 / 4) * 4
                put(f"{blk}.attn.ghost_head", 1, c, 7, 7)
                linear(f"{blk}.attn.pre_proj", 2 * dqk + c, c, 1, 1)
                linear(f"{blk}.attn.attn.0", dqk, 4, 7, 7)
                linear(f"{blk}.attn.attn.2", 49 * heads, dqk, 1, 1)
            else:
                linear(f"{blk}.attn.pre_proj", 3 * c, c)
                put(f"{blk}.attn.rb", heads, 169)
                sd[f"{blk}.attn.relative_id"] = (168 - get_relative_position_index(7, 7)).flatten()
        if i < 3:
            linear(f"layers.{i}.downsample.reduction", 2 * c, 4 * c, bias=False)
            norm(f"layers.{i}.downsample.norm", 4 * c)
    norm("norm", 768)
    linear("head", 1000, 768)
    return sd


@pytest.fixture(scope="module")
def official_tiny_file(tmp_path_factory):
    sd = official_tiny_state_dict()
    assert len(sd) == 215
    path = tmp_path_factory.mktemp("ckpt") / "elsa_swin_tiny.pth"
    torch.save({"state_dict_ema": {"module." + k: v for k, v in sd.items()}, "epoch": 309}, path)
    return str(path), sd


def assert_loaded(model, sd, skip=()):
    own = model.state_dict()
    for k, v in sd.items():
        if not k.startswith(skip):
            assert torch.equal(own[k], v), k


def test_official_checkpoint_loads_strictly_through_timm(official_tiny_file):
    path, sd = official_tiny_file
    model = timm.create_model("elsa_swin_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    assert set(model.state_dict()) == set(sd)
    assert_loaded(model, sd)
    assert model.pretrained_cfg["crop_pct"] == 0.9 and model.pretrained_cfg["interpolation"] == "bicubic"
    assert model.pretrained_cfg["mean"] == (0.485, 0.456, 0.406) and model.pretrained_cfg["classifier"] == "head"
    head10 = timm.create_model("elsa_swin_tiny", pretrained=True, num_classes=10,
                               pretrained_cfg_overlay=dict(file=path))
    assert head10.head.out_features == 10
    assert_loaded(head10, sd, skip=("head.",))


def test_checkpoint_into_dense_backbone(official_tiny_file, tmp_path):
    """cls checkpoint: strict on the backbone keys except norm0..3; det checkpoint (`backbone.`): strict on all."""
    path, sd = official_tiny_file
    backbone = ELSASwin(**TINY)
    backbone.load_checkpoint(path, use_ema=True)
    assert_loaded(backbone, sd, skip=("norm.", "head."))
    det = {"backbone." + k: v for k, v in backbone.state_dict().items()}
    det["neck.lateral_convs.0.conv.weight"] = torch.zeros(256, 96, 1, 1)
    torch.save({"state_dict": det, "meta": {"epoch": 12}}, tmp_path / "det.pth")
    fresh = ELSASwin(**TINY)
    fresh.init_weights(str(tmp_path / "det.pth"))
    assert_loaded(fresh, backbone.state_dict())
    del det["backbone.norm2.weight"]
    torch.save({"state_dict": det}, tmp_path / "det_broken.pth")
    with pytest.raises(CheckpointMismatchError, match="norm2.weight"):
        ELSASwin(**TINY).load_checkpoint(str(tmp_path / "det_broken.pth"))


def test_wrong_architecture_fails_loudly(official_tiny_file, tmp_path):
    path, sd = official_tiny_file
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(204\)(.|\n)*shape mismatches \(10\)"):
        # S: 12 more stage-3 ELSA blocks (17 keys each) and group width 8 instead of 4
        load_pretrained(ELSASwinTransformer(**SMALL), path, family="elsa_swin", use_ema=True)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(34\)"):
        timm.create_model("elsa_swin_tiny", depths=(2, 2, 4, 2), pretrained=True,
                          pretrained_cfg_overlay=dict(file=path))
    swin_signed = dict(sd)
    swin_signed["layers.3.blocks.0.attn.relative_id"] = get_relative_position_index(7, 7).flatten()
    torch.save(swin_signed, tmp_path / "bad_ids.pth")
    with pytest.raises(CheckpointMismatchError, match="relative_id"):
        load_pretrained(ELSASwinTransformer(**TINY), str(tmp_path / "bad_ids.pth"), family="elsa_swin")


def test_swin_checkpoint_initialises_elsa_swin(tmp_path):
    """Stock Swin-T (timm and official layouts) -> ELSA-Swin-T: stage 4 computes the same function, shared
    layers are copied, the ELSA attention keeps its init."""
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224").eval()
    torch.save(swin.state_dict(), tmp_path / "timm_swin.pth")
    official = {k.replace("head.fc.", "head."): v for k, v in swin.state_dict().items()}  # downsample at stage end
    official = {(f"layers.{int(k.split('.')[1]) - 1}.downsample" + k.split("downsample", 1)[1]
                 if ".downsample." in k else k): v for k, v in official.items()}
    official["layers.3.blocks.0.attn.relative_position_index"] = get_relative_position_index(7, 7)
    torch.save({"model": official}, tmp_path / "swin.pth")
    model = ELSASwinTransformer(**TINY).eval()
    load_pretrained(model, str(tmp_path / "swin.pth"), family="elsa_swin", ignore_missing=elsa_attention_keys(4))
    assert torch.equal(model.layers[0].downsample.reduction.weight, swin.layers[1].downsample.reduction.weight)
    assert torch.equal(model.head.weight, swin.head.fc.weight)
    x = torch.randn(2, 7, 7, 768, dtype=torch.float64)  # exact conversion: compared in float64
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(model.layers[3].blocks).double()(x),
                                   copy.deepcopy(swin.layers[3].blocks).double()(x), rtol=0, atol=1e-10)
    via_timm = timm.create_model("elsa_swin_tiny", pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "timm_swin.pth")))
    ours = model.state_dict()
    shared = [k for k in ours if ".attn." not in k or k.startswith("layers.3.")]
    assert all(torch.equal(via_timm.state_dict()[k], ours[k]) for k in shared)


def test_forward_equals_reference_op_build_and_backward(tiny, monkeypatch):
    """ELSA-Swin-T with the dispatched op == with the pure reference op (float64, ≤1e-10); gradients reach every
    parameter."""
    x = torch.randn(2, 3, 112, 112, dtype=torch.float64)
    model = copy.deepcopy(tiny).double()
    with torch.no_grad():
        out = model(x)
        for name in ("elsa", "elsa_attention"):  # the fused op and the unfused graph's op
            monkeypatch.setattr(ops, name, getattr(reference, name))
        ref = model(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    monkeypatch.undo()
    tiny(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    bad = [n for n, p in tiny.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    tiny.zero_grad(set_to_none=True)
    assert not bad


def test_classifier_at_224_is_one_global_stage4_window(tiny):
    """At 224² the shifted stage-4 block is plain global attention over the 49 tokens (no shift, no mask)."""
    block = copy.deepcopy(tiny.layers[3].blocks[1]).double()  # exact identity: compared in float64
    x = torch.randn(1, 7, 7, 768, dtype=torch.float64)
    y = block.norm1(x).reshape(1, 49, 768)
    with torch.no_grad():
        expected = x + block.attn(y).view(1, 7, 7, 768)
        expected = expected + block.mlp(block.norm2(expected))
        torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-10)


def test_timm_api_and_features_only():
    model = timm.create_model("elsa_swin_tiny", drop_path_rate=0.1, **MINI).eval()
    rates = [b.drop_path.drop_prob for s in model.layers for b in s.blocks if hasattr(b.drop_path, "drop_prob")]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.1, 5)[1:])
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        torch.testing.assert_close(model.forward_head(final, pre_logits=True), final.mean((1, 2)))
        normed = model.forward_intermediates(x, indices=[3], norm=True, intermediates_only=True)
    assert [t.shape[1:] for t in inter] == [(32, 25, 33), (64, 13, 17), (128, 7, 9), (256, 4, 5)]
    torch.testing.assert_close(normed[0], final.permute(0, 3, 1, 2))
    feats = timm.create_model("elsa_swin_tiny", features_only=True, out_indices=(1, 2), **MINI)
    feats.model.load_state_dict(model.state_dict(), strict=False)  # pruned: no stage 4, norm, head
    with torch.no_grad():
        outs = feats.eval()(x)
    assert feats.feature_info.reduction() == [8, 16] and feats.feature_info.channels() == [64, 128]
    for a, b in zip(outs, inter[1:3]):
        torch.testing.assert_close(a, b)
    assert "layers.3.blocks.0.attn.rb" not in feats.model.state_dict()
    model.reset_classifier(5)
    assert model(x).shape == (1, 5)
    model.set_grad_checkpointing()
    assert all(s.grad_checkpointing for s in model.layers)
    groups = group_parameters(model, model.group_matcher())
    assert sum(map(len, groups.values())) == len(list(model.parameters()))
    assert "patch_embed.proj.weight" in groups[min(groups)] and "norm.weight" in groups[max(groups) - 1]


def test_dense_backbone_odd_sizes_and_shift():
    """97×131: maps ceil(H/4)…, strides 4–32; stage-4 block 2 is shifted (dense) unlike the classifier."""
    torch.manual_seed(0)
    dense = ELSASwin(**MINI, out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = dense(torch.randn(1, 3, 97, 131))
        assert [tuple(o.shape) for o in outs] == [(1, 32, 25, 33), (1, 64, 13, 17), (1, 128, 7, 9), (1, 256, 4, 5)]
        assert dense.layers[3].blocks[1].shift_size == 3 and not dense.layers[3].blocks[1].fit_single_window
        x = torch.randn(1, 14, 14, 256)
        block = dense.layers[3].blocks[1]
        unshifted = block.attn(block.norm1(x)[:, :7, :7].reshape(1, 49, 256))
        assert not torch.allclose(block.windowed_attention(block.norm1(x))[:, :7, :7].reshape(1, 49, 256), unshifted)
    assert len(ELSASwin(**MINI, out_indices=(1, 3))(torch.randn(1, 3, 64, 64))) == 2


def test_dense_checkpointing_and_frozen_stages():
    torch.manual_seed(0)
    dense = ELSASwin(**MINI, with_cp=True, frozen_stages=1, drop_path_rate=0.0)  # stem + stage 0 (mmdet's meaning)
    assert all(s.grad_checkpointing for s in dense.layers)
    assert dense.train() is dense
    frozen = [dense.patch_embed, dense.layers[0]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for m in frozen) and dense.layers[1].training
    assert all(p.requires_grad for p in dense.layers[1].parameters())
    x = torch.randn(1, 3, 64, 64)
    sum(o.sum() for o in dense(x)).backward()
    grads = {n: p.grad.clone() for n, p in dense.named_parameters() if p.requires_grad}
    dense.zero_grad()
    dense.set_grad_checkpointing(False)
    sum(o.sum() for o in dense(x)).backward()
    for n, p in dense.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-5)


def test_torch_compile_forward(tiny):
    """ELSA-Swin-T is captured as one graph (no graph breaks) and the compiled forward matches eager."""
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(tiny, backend="aot_eager", fullgraph=True)(x), tiny(x),
                                   rtol=1e-5, atol=1e-5)
