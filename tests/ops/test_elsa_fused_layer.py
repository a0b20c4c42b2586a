"""The ELSA layer on the fused op == the published layer graph (softmax, relayout, `ops.elsa`), for every
lam/gamma case and stride/dilation, forward and gradients of every parameter; hooks and bf16 autocast."""
import pytest
import torch
import torch.nn.functional as F

from localattn.layers import ELSA


def unfused_forward(m, x):
    """ELSA.forward with the published graph for the attention (`ELSA.unfused`)."""
    q, k, v = m.pre_proj(x.permute(0, 3, 1, 2)).split([m.dim_qk, m.dim_qk, m.dim_v], dim=1)
    hadamard = q * k * m.scale
    if m.stride > 1:
        hadamard = F.avg_pool2d(hadamard, m.stride)
    return m.post_proj(m.unfused(m.attn(hadamard), v))


def make(**kwargs):
    torch.manual_seed(0)
    args = dict(dim=24, num_heads=2, kernel_size=5, qkv_bias=True, group_width=4)
    args.update(kwargs)
    return ELSA(**args).double()


def grads(m, x, fn):
    m.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = fn(m, x)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype))
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("kw", [dict(lam=0, gamma=1), dict(lam=2, gamma=0.5), dict(lam=1, gamma=0),
                                dict(lam=0, gamma=0), dict(lam=0, gamma=1, stride=2, dilation=2)],
                         ids=["elsa-swin", "lam2-gamma.5", "lam1", "no-ghost", "s2-d2"])
def test_layer_fused_equals_published_graph(kw):
    m = make(**kw).train()
    x = torch.randn(2, 11, 10, 24, dtype=torch.double)
    out, gx, gp = grads(m, x, lambda m, x: m(x))
    ref, ref_gx, ref_gp = grads(m, x, unfused_forward)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx, ref_gx, rtol=0, atol=1e-11)
    assert gp.keys() == ref_gp.keys()
    for name in gp:
        torch.testing.assert_close(gp[name], ref_gp[name], rtol=0, atol=1e-10, msg=name)


def test_attn_hook_still_sees_the_logits_and_attention_dropout_uses_the_published_graph():
    m = make(lam=0, gamma=1, attn_drop=0.5)
    seen = []
    m.attn.register_forward_hook(lambda mod, inp, out: seen.append(out))
    x = torch.randn(1, 6, 6, 24, dtype=torch.double)
    m.eval()(x)
    assert seen[-1].shape == (1, 2 * 25, 6, 6)  # (B, heads·K², H, W) pre-softmax logits
    torch.manual_seed(3)
    train_out = m.train()(x)
    torch.manual_seed(3)
    torch.testing.assert_close(train_out, unfused_forward(m, x), rtol=0, atol=0)


def test_layer_under_bfloat16_autocast():
    """Autocast bf16: the layer runs (op in bf16) and stays close to float32."""
    m = make(lam=0, gamma=1, num_heads=3, kernel_size=7, dim=96).float().eval()
    with torch.no_grad():
        m.ghost_head.normal_(std=0.2)
    x = torch.randn(2, 14, 14, 96)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=0.05 * ref.abs().max().item())
