"""Autograd formulas of the fused SAN attention ops `localattn::san_pairwise` and `localattn::san_patchwise`
(references: `reference.san_pairwise`, `reference.san_patchwise`). Each backward recomputes the weight
branch from the saved inputs and applies the chain rule with the unfused dispatcher ops (`subtraction2`,
`aggregation_backward`, `subtraction2_backward`), so it runs wherever those have kernels; the forward keeps
nothing but its inputs. Gradients come back in the dtype of each input.
"""
import torch

ops = torch.ops.localattn


def setup_context(ctx, inputs, output):
    """Both ops: save the tensor inputs, keep (kernel_size, dilation)."""
    *tensors, kernel_size, dilation = inputs
    ctx.save_for_backward(*tensors)
    ctx.window = kernel_size, dilation


def pairwise_backward(ctx, grad):
    x1, x2, position, value, scale0, shift0, weight2, shift2, weight5, bias5 = ctx.saved_tensors
    k, d = ctx.window
    acc = torch.promote_types(value.dtype, torch.float32)
    n, rel, h, w = x1.shape
    window = (k, 1, d * (k - 1) // 2, d, True)
    x1a, x2a, pos, val = (t.to(acc).contiguous() for t in (x1, x2, position.unsqueeze(0), value))
    s0, sh0, w2, sh2, w5, b5 = (t.to(acc) for t in (scale0, shift0, weight2, shift2, weight5, bias5))
    features = torch.cat([ops.subtraction2(x1a, x2a, *window),
                          ops.subtraction2(pos, pos, *window).expand(n, -1, -1, -1)], 1)
    u_pre = features * s0[:, None, None] + sh0[:, None, None]
    u = torch.relu(u_pre)
    v_pre = torch.einsum("mc,nctl->nmtl", w2, u) + sh2[:, None, None]
    v = torch.relu(v_pre)
    attn = (torch.einsum("jm,nmtl->njtl", w5, v) + b5[:, None, None]).softmax(2)
    grad_value, grad_attn = ops.aggregation_backward(grad.to(acc).contiguous(), val, attn, *window)
    grad_z = attn * (grad_attn - (attn * grad_attn).sum(2, keepdim=True))
    grad_v = torch.einsum("jm,njtl->nmtl", w5, grad_z) * (v_pre > 0)
    grad_u = torch.einsum("mc,nmtl->nctl", w2, grad_v) * (u_pre > 0)
    grad_features = grad_u * s0[:, None, None]
    grad_x1, grad_x2 = ops.subtraction2_backward(grad_features[:, :rel].contiguous(), h, w, *window)
    grad_pos = sum(ops.subtraction2_backward(grad_features[:, rel:].sum(0, keepdim=True), h, w, *window))[0]
    grads = (grad_x1, grad_x2, grad_pos, grad_value, (grad_u * features).sum((0, 2, 3)), grad_u.sum((0, 2, 3)),
             torch.einsum("nmtl,nctl->mc", grad_v, u), grad_v.sum((0, 2, 3)),
             torch.einsum("njtl,nmtl->jm", grad_z, v), grad_z.sum((0, 2, 3)))
    inputs = (x1, x2, position, value, scale0, shift0, weight2, shift2, weight5, bias5)
    return (*(g.to(t.dtype) for g, t in zip(grads, inputs)), None, None)


def patchwise_backward(ctx, grad):
    hidden, value, weight5, bias5 = ctx.saved_tensors
    k, d = ctx.window
    acc = torch.promote_types(value.dtype, torch.float32)
    n, m, h, w = hidden.shape
    features, w5 = hidden.to(acc).flatten(2), weight5.to(acc)
    weights = (torch.matmul(w5, features) + bias5.to(acc)[:, None]).view(n, -1, k * k, h * w)
    grad_value, grad_weights = ops.aggregation_backward(grad.to(acc).contiguous(), value.to(acc).contiguous(),
                                                        weights, k, 1, d * (k - 1) // 2, d, True)
    grad_z = grad_weights.view(n, -1, h * w)
    grads = (torch.matmul(w5.t(), grad_z).view(n, m, h, w), grad_value,
             torch.einsum("njl,nml->jm", grad_z, features), grad_z.sum((0, 2)))
    return (*(g.to(t.dtype) for g, t in zip(grads, (hidden, value, weight5, bias5))), None, None)
